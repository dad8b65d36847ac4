"""Top-level URLs."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from accounts.views import set_language


def esp_tracking_urls() -> list:
    """Only the configured ESP's tracking webhook: the others, unconfigured, would answer
    every caller with a server error."""
    from anymail import urls as anymail_urls

    backend = settings.EMAIL_BACKEND
    if not backend.startswith("anymail.backends."):
        return []
    esp = backend.split(".")[2]
    return [p for p in anymail_urls.urlpatterns if p.name == f"{esp}_tracking_webhook"]


urlpatterns = [
    path("", RedirectView.as_view(pattern_name="card:card"), name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/", include("smtp_settings.card_urls")),
    path("settings/", include("smtp_settings.urls")),
    path("", include("outbox.urls")),
    path("", include("invoices.urls")),
    path("", include("bounces.urls")),
    path("", include("mail_templates.urls")),
    path("i18n/setlang/", set_language, name="set_language"),
    # The relay ESP's tracking webhook (bounces, complaints): /anymail/<esp>/tracking/,
    # verified by ANYMAIL's WEBHOOK_SECRET; it feeds the bounce intake (bounces/webhooks.py).
    path("anymail/", include(esp_tracking_urls())),
    path("admin/", admin.site.urls),
]
