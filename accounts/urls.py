"""URLs of the user card."""

from django.urls import path

from . import views

app_name = "accounts"

urlpatterns = [
    path("card/", views.card, name="card"),
    path("card/<str:code>/", views.card, name="card_of"),
    path("email/verify/", views.email_verification_send, name="email_verification_send"),
    path("email/verify/<str:token>/", views.email_verify, name="email_verify"),
    path("microsoft365/connect/", views.microsoft365_connect, name="microsoft365_connect"),
    path("microsoft365/callback/", views.microsoft365_callback, name="microsoft365_callback"),
    path("microsoft365/disconnect/", views.microsoft365_disconnect, name="microsoft365_disconnect"),
]
