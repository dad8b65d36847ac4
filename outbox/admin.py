"""Django admin: outgoing messages and Events, read-only (the outbox's own pages act on them).

The sender snapshot holds no secret, only a reference to where it is stored."""

from django.contrib import admin

from .models import Event, OutgoingMessage


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(OutgoingMessage)
class OutgoingMessageAdmin(_ReadOnly):
    list_display = ["created_at", "user", "subject", "state", "attempts", "sent_at", "job"]
    list_filter = ["state", "possibly_duplicated"]
    search_fields = ["subject", "message_id", "user__code"]
    date_hierarchy = "created_at"


@admin.register(Event)
class EventAdmin(_ReadOnly):
    list_display = ["created_at", "user", "kind", "explanation", "message"]
    list_filter = ["kind"]
    search_fields = ["user__code", "reply"]
