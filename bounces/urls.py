"""URLs of staff's inbound mail pages."""

from django.urls import path

from . import views

app_name = "bounces"

urlpatterns = [
    path("staff/inbound/", views.inbound_list, name="inbound_list"),
    path("staff/inbound/<int:pk>/", views.inbound_detail, name="inbound"),
    path("staff/inbound/<int:pk>/raw/", views.inbound_raw, name="inbound_raw"),
]
