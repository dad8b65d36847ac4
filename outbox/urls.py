"""URLs of the outbox and the Events module."""

from django.urls import path

from . import views

app_name = "outbox"

urlpatterns = [
    path("events/", views.events, name="events"),
    path("outbox/<int:pk>/", views.message_status, name="message"),
    path("outbox/test-email/", views.test_email, name="test_email"),
    path("dev/mail/", views.mail_catcher, name="catcher"),
]
