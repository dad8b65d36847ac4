"""Template context shared by every page."""

from django.conf import settings
from django.http import HttpRequest


def site(request: HttpRequest) -> dict:
    # Development-only links (the local mail catcher) appear when DEBUG is on.
    return {"development": settings.DEBUG}
