"""The user card (S2.2, S3): the card's fields, its mail sender, the card e-mail's
verification link and the OAuth providers' sign-in popups. Paths stay under /accounts/ (Entra
app registrations name /accounts/microsoft365/callback/); the views live with the sender
settings, `accounts` keeps only who the user is."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from accounts.forms import CardForm
from accounts.models import User
from outbox.limits import LimitReached, domain_check_limits, limits_take

from . import oauth, presets, providers, verification
from .diagnose import ConnectionTest, connection_test
from .errors import SendError
from .explain import explain
from .forms import SenderProfileForm
from .models import OAuthConnection
from .resolve import SenderConfigError
from .selectors import (
    global_server_get,
    sender_config_for,
    system_settings_get,
    user_profile_get,
)
from .services import (
    DomainCheckRefused,
    connection_test_refusal,
    domain_check_refresh,
    profile_test_passed,
    profile_update,
)
from .tasks import domain_check


def _effective_sender(user: User) -> dict:
    try:
        return {"config": sender_config_for(user=user), "error": None}
    except SenderConfigError as error:
        return {"config": None, "error": error.message}


@sensitive_post_parameters("password")
@transaction.non_atomic_requests  # the connection test talks to a server: no transaction open
@login_required
def card(request: HttpRequest, code: str | None = None) -> HttpResponse:
    """The user card, "Ustawienia własne → Użytkownik": card fields and mail sender (S2.2, S3).

    Staff may open another user's card (`/accounts/card/<code>/`) to support them.
    """
    if code is None or code == request.user.code:
        # A copy: a failed form must not change request.user for the rest of the request.
        user = User.objects.get(pk=request.user.pk)
    elif request.user.is_staff:
        user = get_object_or_404(User, code=code)
    else:
        raise PermissionDenied
    profile = user_profile_get(user=user)
    system = system_settings_get()
    profile_kwargs = {
        "profile": profile,
        "is_mail_sending_user": system.mail_sending_user_id == user.pk,
        "global_server": global_server_get(),
    }
    test = None
    if request.method == "POST" and request.POST.get("action") in ("m365_graph", "m365_smtp"):
        _m365_transport_choose(request, user, graph=request.POST["action"] == "m365_graph")
        return redirect(request.path)
    recheck = request.method == "POST" and request.POST.get("action") == "check_domain"
    if recheck:
        card_form = CardForm(instance=user)
        profile_form = SenderProfileForm(card_email=user.email, **profile_kwargs)
    elif request.method == "POST" and request.POST.get("action") == "preset":
        card_form, profile_form = _preset_forms(request, user, profile_kwargs)
    elif request.method == "POST" and request.POST.get("action") == "test_connection":
        test = _connection_test(request, user)
        card_form = CardForm(instance=user)
        profile_form = SenderProfileForm(card_email=user.email, **profile_kwargs)
    elif request.method == "POST":
        card_form = CardForm(request.POST, instance=user)
        card_valid = card_form.is_valid()
        card_email = card_form.cleaned_data.get("email", "") if card_valid else user.email
        profile_form = SenderProfileForm(request.POST, card_email=card_email, **profile_kwargs)
        if card_valid and profile_form.is_valid():
            with transaction.atomic():
                card_form.save()
                profile_update(user=user, **profile_form.profile_fields)
            messages.success(request, _("The settings have been saved."))
            return redirect(request.path)
        messages.error(request, _("Nothing was saved: please correct the fields marked below."))
    else:
        card_form = CardForm(instance=user)
        profile_form = SenderProfileForm(card_email=user.email, **profile_kwargs)
    stored = User.objects.get(pk=user.pk) if request.method == "POST" else user
    # Before the effective sender: Default mode goes by the stored verdict (issue 14).
    domain = None
    if stored.email_verified and settings.PLATFORM_SENDING_IPS:
        try:
            domain = domain_check_refresh(address=stored.email, force=recheck, user=request.user)
        except DomainCheckRefused as refused:
            messages.error(request, refused.message)
            domain = refused.verdict
    m365 = _connection(stored, providers.MICROSOFT365)
    m365_module = providers.MICROSOFT365.oauth
    return render(
        request,
        "smtp_settings/card.html",
        {
            "card_form": card_form,
            "profile_form": profile_form,
            "profile": profile,
            "card_user": stored,
            "effective": _effective_sender(stored),
            "is_mail_sending_user": profile_kwargs["is_mail_sending_user"],
            "is_own_card": user.pk == request.user.pk,
            "sending_ips": settings.PLATFORM_SENDING_IPS,
            "m365_server": settings.M365_SMTP_SERVER,
            "google_server": settings.GOOGLE_SMTP_SERVER,
            "m365_configured": providers.MICROSOFT365.oauth.configured(),
            "google_configured": providers.GOOGLE.oauth.configured(),
            "m365": m365,
            "m365_graph": m365_module.uses_graph(m365),
            "m365_choice": settings.M365_TRANSPORT == "auto",
            "graph_endpoint": settings.M365_GRAPH_ENDPOINT,
            "google": _connection(stored, providers.GOOGLE),
            "test": test,
            "domain": domain,
        },
    )


def _m365_transport_choose(request: HttpRequest, user: User, *, graph: bool) -> None:
    """The card's switch between SMTP and Microsoft Graph (M365_TRANSPORT=auto): the user's own
    card and sign-in only."""
    m365 = providers.MICROSOFT365
    if user.pk != request.user.pk or settings.M365_TRANSPORT != "auto":
        messages.error(request, _("Only the account's owner can choose this, on their own card."))
        return
    if _connection(user, m365) is None:
        messages.error(request, _("Authenticate with Microsoft 365 first."))
        return
    try:
        m365.oauth.graph_choose(user=user, graph=graph)
    except SendError as error:
        explained = explain(error.explanation, error.params)
        messages.error(request, f"{explained['title']} {explained['fix']}")
        return
    if graph:
        messages.success(
            request,
            _("Your mail is sent through Microsoft Graph now; SMTP sign-in is not needed."),
        )
    else:
        messages.success(request, _("Your mail is sent through SMTP (XOAUTH2) again."))


def _connection(user: User, provider: providers.Provider) -> OAuthConnection | None:
    return OAuthConnection.objects.filter(user=user, provider=provider.key).first()


def _preset_forms(request: HttpRequest, user: User, profile_kwargs: dict):
    """ "Fill in from my e-mail's provider": the card as typed, the sender filled from the
    typed e-mail's MX (issue 14, item 2), nothing saved. A fresh MX lookup counts against the
    user's DOMAIN_CHECKS_PER_HOUR."""
    typed = request.POST.get("email", "").strip()
    # What the page held (a field it did not send keeps the stored value).
    card_initial = {
        name: request.POST.get(name, getattr(user, name)) for name in CardForm.Meta.fields
    }
    card_form = CardForm(instance=user, initial=card_initial)
    profile = profile_kwargs["profile"]
    stored = {
        "mode": profile.mode,
        "server": profile.server,
        "security": profile.security,
        "login": profile.login,
    }
    sender_initial = {name: request.POST.get(name, value) for name, value in stored.items()}
    refused = None
    if typed and presets.needs_lookup(typed):
        try:
            limits_take(domain_check_limits(user_id=request.user.pk))
        except LimitReached as limit:
            refused = limit.message
    if refused:
        messages.error(request, refused)
    elif not typed:
        messages.error(request, _("Enter your e-mail on the card first."))
    else:
        preset = presets.preset_for(presets.mx_provider(typed), typed)
        if preset:
            sender_initial.update(preset.fields)
            messages.info(request, preset.filled)
        else:
            messages.info(
                request,
                _(
                    "Your e-mail's provider is not one the card knows: ask them for the SMTP "
                    "server name, port and SSL/TLS, and enter them below."
                ),
            )
    profile_form = SenderProfileForm(card_email=typed, initial=sender_initial, **profile_kwargs)
    return card_form, profile_form


def _connection_test(request: HttpRequest, user: User) -> ConnectionTest | None:
    """Test the saved configuration of `user`, within the connection-test limits."""
    refusal = connection_test_refusal(user=request.user)
    if refusal:
        messages.error(request, refusal)
        return None
    try:
        sender = sender_config_for(user=user)
    except SenderConfigError as error:
        messages.error(request, error.message)
        return None
    own = user.email or sender.from_email
    to = request.POST.get("to", "").strip() or own
    # Only staff may ask whether a server accepts some other address (issue 11, item 10).
    test = connection_test(sender, to=to, own_address=None if request.user.is_staff else own)
    if (
        test.passed
        and sender.needs_connection_test
        and profile_test_passed(user=user, config=sender)
    ):
        messages.success(request, _("The connection test passed: mass mailing is available now."))
    return test


# -- the card e-mail's verification link (issue 11) -------------------------------------------
@require_POST
@login_required
def email_verification_send(request: HttpRequest) -> HttpResponse:
    """Mail the verification link to the saved card e-mail (own card only)."""
    user = User.objects.get(pk=request.user.pk)
    try:
        verification.email_verification_send(
            user=user,
            link_for=lambda token: request.build_absolute_uri(
                reverse("card:email_verify", args=[token])
            ),
        )
    except (LimitReached, ValidationError) as error:
        messages.error(request, "; ".join(error.messages))
    else:
        messages.success(
            request,
            _(
                "A verification link has been sent to %(email)s. Open it (also on another "
                "device) and confirm; until then your mail is sent as described on this card."
            )
            % {"email": user.email},
        )
    return redirect("card:card")


@transaction.non_atomic_requests  # email_verification_confirm holds its own transaction
def email_verify(request: HttpRequest, token: str) -> HttpResponse:
    """The link from the mail: no login needed (the token is the proof); GET shows what would be
    verified, only the page's POST confirms it (a mail scanner's GET verifies nothing)."""
    context: dict = {"token": token}
    try:
        if request.method == "POST":
            done = verification.email_verification_confirm(token=token)
            context["done"] = done
            # The verified address's domain is checked at once, outside this request (its
            # DNS must not hold the transaction): Default mode goes by it from the next mail.
            transaction.on_commit(lambda: domain_check.delay(done.address))
        else:
            context["pending"] = verification.verification_check(token)
    except verification.VerificationError as error:
        context["error"] = error.message
    return render(
        request,
        "smtp_settings/email_verify.html",
        context,
        status=400 if "error" in context else 200,
    )


# -- OAuth providers' sign-in (S5.4; issue 15) -------------------------------------------------
def _provider(key: str) -> providers.Provider:
    provider = providers.get(key)
    if provider is None or not provider.oauth_module:
        raise Http404
    return provider


@login_required
def oauth_connect(request: HttpRequest, provider: str) -> HttpResponse:
    """Start the sign-in: in the popup (`?popup=1`) or, without JavaScript, the whole page."""
    chosen = _provider(provider)
    if not chosen.oauth.configured():
        return render(
            request,
            "smtp_settings/oauth_done.html",
            {"ok": False, "provider": chosen, "error": _not_configured(chosen)},
            status=503,
        )
    redirect_uri = request.build_absolute_uri(reverse(f"card:{chosen.key}_callback"))
    try:
        auth_uri = chosen.oauth.connect_start(
            session=request.session,
            user=request.user,
            redirect_uri=redirect_uri,
            popup=request.GET.get("popup") == "1",
        )
    except oauth.OAuthError as error:  # the provider's discovery did not answer
        return render(
            request,
            "smtp_settings/oauth_done.html",
            {"ok": False, "provider": chosen, "error": error.message},
            status=503,
        )
    return HttpResponseRedirect(auth_uri)


@login_required
def oauth_callback(request: HttpRequest, provider: str) -> HttpResponse:
    """The provider sends the user back here; the popup tells its opener and closes itself."""
    chosen = _provider(provider)
    popup = oauth.flow_is_popup(request.session)
    try:
        connection = chosen.oauth.connect_finish(
            session=request.session, user=request.user, params=request.GET.dict()
        )
    except oauth.OAuthError as error:
        context = {"ok": False, "error": error.message, "detail": error.detail}
    else:
        context = {"ok": True, "address": connection.address}
    if not popup:
        if context["ok"]:
            messages.success(request, _connected(chosen))
        else:
            messages.error(request, context["error"])
        return redirect("card:card")
    response = render(
        request,
        "smtp_settings/oauth_done.html",
        {**context, "provider": chosen, "popup": True},
    )
    # The popup went through the provider's pages: keep its opener reachable on the way back.
    response["Cross-Origin-Opener-Policy"] = "unsafe-none"
    return response


@require_POST
@login_required
def oauth_disconnect(request: HttpRequest, provider: str) -> HttpResponse:
    chosen = _provider(provider)
    oauth.disconnect(provider=chosen, user=request.user)
    messages.success(
        request,
        _("%(provider)s has been disconnected; its sign-in was deleted.")
        % {"provider": chosen.name},
    )
    return redirect("card:card")


def _connected(provider: providers.Provider) -> str:
    if provider.key == "microsoft365":
        return _("Microsoft 365 has been authenticated.")
    return _("%(provider)s has been connected.") % {"provider": provider.name}


def _not_configured(provider: providers.Provider) -> str:
    if provider.key == "microsoft365":
        return _(
            "Microsoft 365 sign-in is not configured on this platform yet: an administrator "
            "must register the application (M365_CLIENT_ID and M365_CLIENT_SECRET)."
        )
    return _(
        "Google sign-in is not configured on this platform yet: an administrator must create "
        "its OAuth client (GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET)."
    )
