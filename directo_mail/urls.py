"""Top-level URLs."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from accounts.views import set_language

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="accounts:card"), name="home"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/", include("accounts.urls")),
    path("settings/", include("smtp_settings.urls")),
    path("", include("outbox.urls")),
    path("", include("invoices.urls")),
    path("i18n/setlang/", set_language, name="set_language"),
    # ESP tracking webhooks (bounces, complaints): /anymail/<esp>/tracking/, verified by
    # ANYMAIL_WEBHOOK_SECRET; they feed the bounce intake (bounces/webhooks.py).
    path("anymail/", include("anymail.urls")),
    path("admin/", admin.site.urls),
]
