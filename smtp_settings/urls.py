"""URLs of the system settings."""

from django.urls import path

from . import views

app_name = "smtp_settings"

urlpatterns = [
    path("system/", views.system_settings, name="system"),
]
