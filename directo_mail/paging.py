"""What a paged, filtered list hands its pager links (templates/_pages.html)."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.http import HttpRequest


def filter_query(request: HttpRequest, form: forms.Form) -> str:
    """The list's filters as a query string, without the page and without anything the form
    does not know, so a pager link keeps the filters and nothing else."""
    return urlencode(
        {k: v for k, v in request.GET.items() if k != "page" and k in form.fields and v}
    )
