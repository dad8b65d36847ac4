"""System settings ("Ustawienia Directo"): company, mail sending user and the global sender."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters

from accounts.decorators import staff_required

from .forms import CompanyForm, MailSendingUserForm, SenderProfileForm, check_dependents_keep_server
from .selectors import (
    company_get,
    global_profile_get,
    system_settings_get,
    users_needing_global_server,
)
from .services import company_update, mail_sending_user_set, profile_update


@sensitive_post_parameters("global-password")
@staff_required
def system_settings(request: HttpRequest) -> HttpResponse:
    system = system_settings_get()
    profile = global_profile_get()
    data = request.POST if request.method == "POST" else None
    company_form = CompanyForm(data, company=company_get())
    sending_form = MailSendingUserForm(data, mail_sending_user=system.mail_sending_user)
    global_form = SenderProfileForm(data, profile=profile, is_global=True, prefix="global")
    if data is not None:
        forms_valid = all(
            [company_form.is_valid(), sending_form.is_valid(), global_form.is_valid()]
        )
        if forms_valid and check_dependents_keep_server(
            global_form=global_form, sending_form=sending_form
        ):
            company_update(
                name=company_form.cleaned_data["company_name"],
                slug=company_form.cleaned_data["company_slug"],
            )
            mail_sending_user_set(user=sending_form.cleaned_data["mail_sending_user"])
            profile_update(user=None, **global_form.profile_fields)
            messages.success(request, _("The system settings have been saved."))
            return redirect("smtp_settings:system")
        messages.error(request, _("Nothing was saved: please correct the fields marked below."))
    return render(
        request,
        "smtp_settings/system.html",
        {
            "company_form": company_form,
            "sending_form": sending_form,
            "global_form": global_form,
            "profile": profile,
            "system": system,
            "dependent_users": users_needing_global_server(),
        },
    )
