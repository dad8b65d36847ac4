"""URLs of the staff editor of mail templates."""

from django.urls import path

from . import views

app_name = "mail_templates"

urlpatterns = [
    path("staff/templates/", views.template_list, name="list"),
    path("staff/templates/<str:kind>/<str:lang>/", views.template_edit, name="edit"),
]
