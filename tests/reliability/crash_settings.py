"""Settings for test_attacks_defaults' DEBUG error page: the app's own, plus a URL that fails
the way a misconfigured relay does. CRASH_DJANGO_REPORTING=1 puts Django's own error reporter
back (the control)."""

import os

from directo_mail.settings import *  # noqa: F403

ROOT_URLCONF = "tests.reliability.crash_urls"
if os.environ.get("CRASH_DJANGO_REPORTING"):
    DEFAULT_EXCEPTION_REPORTER_FILTER = "django.views.debug.SafeExceptionReporterFilter"
    DEFAULT_EXCEPTION_REPORTER = "django.views.debug.ExceptionReporter"
