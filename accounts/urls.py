"""URLs of the user card."""

from django.urls import path

from . import views

app_name = "accounts"

urlpatterns = [
    path("card/", views.card, name="card"),
    path("card/<str:code>/", views.card, name="card_of"),
    path("microsoft365/connect/", views.microsoft365_connect, name="microsoft365_connect"),
    path("microsoft365/callback/", views.microsoft365_callback, name="microsoft365_callback"),
    path("microsoft365/disconnect/", views.microsoft365_disconnect, name="microsoft365_disconnect"),
]
