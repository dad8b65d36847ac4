"""URLs of the user card."""

from django.urls import path

from . import views

app_name = "accounts"

urlpatterns = [
    path("card/", views.card, name="card"),
    path("card/<str:code>/", views.card, name="card_of"),
]
