"""Settings for the peer run (django-post-office): the project's settings plus `post_office`.

Only bench/peer.py uses them, in a subprocess with its own fresh database (DATABASE_URL) and
media folder (MEDIA_ROOT). Mail goes through Django's SMTP backend to the bench's sink,
given as BENCH_SINK_PORT and BENCH_SINK_TLS (StartTLS, verified against SSL_CERT_FILE).
"""

import os

from directo_mail.settings import *  # noqa: F403
from directo_mail.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "post_office"]

EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(os.environ.get("BENCH_SINK_PORT", "25"))
EMAIL_USE_TLS = os.environ.get("BENCH_SINK_TLS") == "1"
EMAIL_USE_SSL = False
EMAIL_HOST_USER = EMAIL_HOST_PASSWORD = ""
EMAIL_TIMEOUT = 30

# post_office's defaults (5 threads per process, batches of 100, a Log row per mail), with
# the SMTP backend named explicitly.
POST_OFFICE = {"BACKENDS": {"default": EMAIL_BACKEND}}
