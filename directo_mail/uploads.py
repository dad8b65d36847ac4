"""A request body larger than any mail could carry is refused before anything reads it.

Django bounds the memory a multipart body takes (form fields: DATA_UPLOAD_MAX_MEMORY_SIZE;
files over FILE_UPLOAD_MAX_MEMORY_SIZE are streamed to a temporary file), but it reads the
whole body, so a body of gigabytes costs that much disk and time. This middleware answers
from the declared Content-Length (WSGI never reads past it) with a page that says the limit,
before the CSRF check or any view reads the body. A reverse proxy's own limit
(nginx `client_max_body_size`) should sit just above UPLOAD_MAX_MB.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


class RequestSizeMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs):
        # In process_view, not __call__: the user and their language are known for the page.
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length <= settings.UPLOAD_MAX_MB * 1_000_000:
            return None
        # (No "Connection: close": WSGI forbids hop-by-hop headers; the server closes or drains.)
        return render(
            request,
            "request_too_large.html",
            {"limit": settings.UPLOAD_MAX_MB, "back": request.path},
            status=413,
        )
