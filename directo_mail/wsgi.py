"""WSGI entry point (gunicorn directo_mail.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "directo_mail.settings")
application = get_wsgi_application()
