"""Django admin for users and the company."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from .models import Company, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["code"]
    list_display = ["code", "name", "email", "group", "is_staff", "is_active", "card_link"]
    search_fields = ["code", "name", "email"]
    list_filter = ["is_staff", "is_active", "group"]
    fieldsets = [
        (None, {"fields": ["code", "password"]}),
        (
            _("User card"),
            {
                "fields": [
                    "name",
                    "group",
                    "office_phone",
                    "phone",
                    "email",
                    "bcc",
                    "reply_to",
                    "signature",
                    "language",
                ]
            },
        ),
        (_("Permissions"), {"fields": ["is_active", "is_staff", "is_superuser", "groups"]}),
        (_("Dates"), {"fields": ["last_login", "date_joined"]}),
    ]

    @admin.display(description=_("user card"))
    def card_link(self, obj: User) -> str:
        url = reverse("card:card_of", args=[obj.code])
        return format_html('<a href="{}">{}</a>', url, _("open"))

    add_fieldsets = [
        (None, {"classes": ["wide"], "fields": ["code", "name", "email", "password1", "password2"]})
    ]


@admin.register(Company)
class CompanyAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
