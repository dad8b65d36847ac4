"""URLs of the invoice list and of bulk jobs."""

from django.urls import path

from . import customer_views, views

app_name = "invoices"

urlpatterns = [
    path("invoices/", views.invoice_list, name="list"),
    path("invoices/send/", views.invoice_send, name="send"),
    path("invoices/<int:pk>/", views.invoice_detail, name="invoice"),
    path("invoices/<int:pk>/pdf/", views.invoice_pdf_preview, name="invoice_pdf"),
    path("invoices/<int:pk>/send/", views.invoice_compose, name="invoice_compose"),
    path("customers/", customer_views.customer_list, name="customers"),
    path("customers/<int:pk>/", customer_views.customer_detail, name="customer"),
    path("customers/<int:pk>/write/", customer_views.customer_write, name="customer_write"),
    path("letters/", views.letter_list, name="letters"),
    path("letters/new/", views.letter_edit, name="letter_new"),
    path("letters/<int:pk>/", views.letter_detail, name="letter"),
    path("letters/<int:pk>/edit/", views.letter_edit, name="letter_edit"),
    path("letters/<int:pk>/send/", views.letter_send, name="letter_send"),
    # A letter's one-click unsubscribe link (RFC 8058): public, the signed token is the proof.
    path("unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
    path("jobs/", views.job_list, name="jobs"),
    path("jobs/<int:pk>/", views.job_detail, name="job"),
    path("jobs/<int:pk>/progress/", views.job_progress, name="job_progress"),
    path("jobs/<int:pk>/cancel/", views.job_cancel, name="job_cancel"),
    path("jobs/<int:pk>/resume/", views.job_resume, name="job_resume"),
]
