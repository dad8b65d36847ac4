"""Request guards: the user card's language and time zone, and no NUL character in an address."""

import contextlib
import zoneinfo

from django.http import HttpResponseBadRequest
from django.utils import timezone, translation
from django.utils.translation import gettext as _


class UserLanguageMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.language:
            translation.activate(user.language)
            request.LANGUAGE_CODE = user.language
        return self.get_response(request)


class UserTimeZoneMiddleware:
    """Times are shown, and a "send at" typed in is read, in the user card's time zone; others
    (and a name this system no longer knows) get settings.TIME_ZONE."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        zone = None  # the installation's zone
        if user is not None and user.is_authenticated and user.time_zone:
            # A name this system no longer knows: the installation's zone too.
            with contextlib.suppress(zoneinfo.ZoneInfoNotFoundError, ValueError):
                zone = zoneinfo.ZoneInfo(user.time_zone)
        with timezone.override(zone):  # for this request only: nothing leaks to the next
            return self.get_response(request)


class NullCharacterMiddleware:
    """A NUL in the path or the query string is refused with 400 and a plain explanation.

    Forms refuse it themselves (Django's CharField); this covers the path and query values
    that views pass to the database directly (filters, user codes), where PostgreSQL would
    raise "text fields cannot contain NUL" as a server error.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        query = request.GET
        if "\x00" in request.path or any(
            "\x00" in key or any("\x00" in value for value in query.getlist(key)) for key in query
        ):
            return HttpResponseBadRequest(
                _("The address contains a null character. Remove it and try again."),
                content_type="text/plain; charset=utf-8",
            )
        return self.get_response(request)
