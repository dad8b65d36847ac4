"""URLs of the outbox and the Events module."""

from django.urls import path

from . import views

app_name = "outbox"

urlpatterns = [
    path("events/", views.events, name="events"),
    path("outbox/<int:pk>/", views.message_status, name="message"),
    path("outbox/<int:pk>/status/", views.message_status_json, name="message_status"),
    path("outbox/<int:pk>/cancel/", views.message_cancel, name="message_cancel"),
    path("outbox/test-email/", views.test_email, name="test_email"),
    path("dev/mail/", views.mail_catcher, name="catcher"),
    path("dev/mail/status/", views.mail_catcher_status, name="catcher_status"),
    # Staff's outbox: every user's messages (issue 12, item 5).
    path("staff/outbox/", views.staff_outbox, name="staff_outbox"),
    path("staff/outbox/<int:pk>/", views.staff_message, name="staff_message"),
    path("staff/outbox/<int:pk>/eml/", views.staff_message_eml, name="staff_message_eml"),
    path(
        "staff/outbox/<int:pk>/<str:action>/",
        views.staff_message_action,
        name="staff_message_action",
    ),
]
