"""`{{ field|focus_if_invalid }}`: an invalid field's widget with `autofocus`, so that after a
refused Save the focus lands on the first field to correct (issue 14, item 5)."""

from django import template

register = template.Library()


@register.filter
def focus_if_invalid(field):
    if getattr(field, "errors", None):
        return field.as_widget(attrs={"autofocus": True})
    return field
