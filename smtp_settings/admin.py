"""Django admin for sender profiles and system settings: passwords only as "set / not set"."""

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from .models import Security, SenderProfile, SystemSettings


@admin.register(SenderProfile)
class SenderProfileAdmin(admin.ModelAdmin):
    list_display = ["owner", "mode", "server", "security", "login", "password_set", "updated_at"]
    list_filter = ["mode", "security"]
    search_fields = ["user__code", "host", "login"]
    # The password is changed on the card or with `sender set --password-stdin`, never here.
    # Changing the server here does not move the password: it stays bound to the server it was
    # entered for (shown below), and nothing is sent with it elsewhere until it is entered again.
    fields = [
        "user",
        "mode",
        "host",
        "port",
        "security",
        "login",
        "password_set",
        "password_for",
        "updated_at",
    ]
    readonly_fields = ["password_set", "password_for", "updated_at"]
    raw_id_fields = ["user"]

    @admin.display(description=_("owner"))
    def owner(self, obj: SenderProfile) -> str:
        return obj.user.code if obj.user_id else str(_("global"))

    @admin.display(description=_("password"))
    def password_set(self, obj: SenderProfile) -> str:
        return str(_("set")) if obj.has_password else str(_("not set"))

    @admin.display(description=_("password entered for"))
    def password_for(self, obj: SenderProfile) -> str:
        bound = obj.password_server
        if bound is None:
            return "—"
        host, port, security = bound
        shown = f"[{host}]" if ":" in host else host
        return f"{shown}:{port} ({Security(security).label})"


@admin.register(SystemSettings)
class SystemSettingsAdmin(admin.ModelAdmin):
    list_display = ["__str__", "mail_sending_user", "updated_at"]
    raw_id_fields = ["mail_sending_user"]

    def has_add_permission(self, request) -> bool:
        return not SystemSettings.objects.exists()
