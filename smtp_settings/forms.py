"""Forms for a sender profile (the card's SMTP part, the global sender) and system settings.

They validate only; `smtp_settings.services` writes. `sender set` uses the same forms, so the
command line and the pages refuse the same input with the same messages.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from accounts.forms import no_control_chars_decoded
from accounts.models import Company, User, no_control_chars, slug_validator

from .models import RATE_LIMIT_MAX, Security, SenderMode, SenderProfile
from .resolve import OAUTH_TRANSPORTS
from .selectors import users_needing_global_server
from .validation import (
    check_not_microsoft_basic_auth,
    check_public_address,
    check_security,
    normalize_password,
    parse_server,
)

GLOBAL_MODES = (SenderMode.DEFAULT, SenderMode.SMTP, SenderMode.REPLY_TO)


def _server_key(server: tuple[str, int, str] | None) -> str:
    """A server as the card's hidden field carries it."""
    return "" if server is None else f"{server[0]}|{server[1]}|{server[2]}"


class SenderProfileForm(forms.Form):
    """The mail sender and, for SMTP, server, security, login and password (S3)."""

    mode = forms.ChoiceField(label=_("Mail sender"), choices=SenderMode.choices)
    server = forms.CharField(
        label=_("Mail server and port"),
        required=False,
        max_length=300,
        help_text=_("host:port, for example smtp.gmail.com:465"),
        widget=forms.TextInput(
            attrs={"placeholder": "smtp.example.com:587", "spellcheck": "false"}
        ),
    )
    security = forms.ChoiceField(
        label=_("SSL/TLS"), choices=Security.choices, initial=Security.SSL, required=False
    )
    login = forms.CharField(
        label=_("User name"),
        required=False,
        max_length=254,
        validators=[no_control_chars],
        help_text=_(
            "The mailbox login (for Microsoft 365, its address). Leave it empty when the "
            "server needs no authentication."
        ),
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    password = forms.CharField(
        label=_("Password"),
        required=False,
        strip=False,
        max_length=1000,
        validators=[no_control_chars],
        help_text=_("Leave empty to keep the stored password."),
        # Never rendered back (render_value=False): the page shows only whether one is set.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    clear_password = forms.BooleanField(label=_("Remove the stored password"), required=False)
    unencrypted_auth = forms.BooleanField(
        label=_("Send my user name and password to this server unencrypted"),
        required=False,
        help_text=_(
            "With SSL/TLS “No” the user name and password cross the network as plain text: "
            "anyone on the way can read them. Tick this only if whoever manages the server "
            "confirms it offers no encryption. The confirmation holds for this server and port "
            "only."
        ),
    )
    # The inherited server (S6.2) as the card showed it when opened: a password typed for that
    # one is never bound to the server it became meanwhile (issue 11, item 5). Disabled: it
    # always renders the server of now; the value posted is read from the raw data.
    inherited_server = forms.CharField(required=False, disabled=True, widget=forms.HiddenInput)
    rate_limit = forms.IntegerField(
        label=_("Messages per minute"),
        required=False,
        min_value=1,
        max_value=RATE_LIMIT_MAX,
        help_text=_(
            "The most your server accepts from you in a minute; bulk sending keeps under it. "
            "Leave empty for no limit of your own."
        ),
        widget=forms.NumberInput(attrs={"inputmode": "numeric"}),
    )

    def __init__(
        self,
        *args,
        profile: SenderProfile,
        is_global: bool = False,
        is_mail_sending_user: bool = False,
        card_email: str = "",
        global_has_server: bool = False,
        global_server: tuple[str, int, str] | None = None,
        **kwargs,
    ) -> None:
        kwargs.setdefault(
            "initial",
            {
                "mode": profile.mode,
                "server": profile.server,
                "security": profile.security,
                "login": profile.login,
                "rate_limit": profile.rate_limit,
            },
        )
        super().__init__(*args, **kwargs)
        self.profile = profile
        self.is_global = is_global
        self.is_mail_sending_user = is_mail_sending_user
        self.card_email = card_email
        # The server a login-only profile (S6.2) inherits: where its password would go.
        self.global_server = global_server
        self.global_has_server = global_has_server or global_server is not None
        self.fields["inherited_server"].initial = _server_key(global_server)
        if is_global:
            self.fields["mode"].choices = [c for c in SenderMode.choices if c[0] in GLOBAL_MODES]

    def _mode(self) -> str | None:
        return self.data.get(self.add_prefix("mode"))

    def clean_server(self) -> tuple[str, int | None] | None:
        """Parsed only for SMTP; other modes leave the stored server as it is."""
        value = self.cleaned_data["server"].strip()
        if self._mode() != SenderMode.SMTP:
            return None
        if not value:
            return ("", None)
        host, port = parse_server(value)
        check_public_address(host)
        return host, port

    def clean(self) -> dict:
        data = super().clean()
        mode = data.get("mode")
        if mode is None:
            return data
        if mode == SenderMode.DEFAULT and self.is_mail_sending_user:
            raise ValidationError(
                {
                    "mode": _(
                        "You are the company's mail sending user: everyone inherits your "
                        "sender, so yours cannot be Default. An administrator can name "
                        "another mail sending user first."
                    )
                }
            )
        if self.is_mail_sending_user and mode != SenderMode.SMTP:
            # Everyone's global server is this user's: login-only users (S6.2) would lose it.
            dependent_error = dependents_without_server_error()
            if dependent_error is not None:
                raise ValidationError({"mode": dependent_error})
        if mode == SenderMode.REPLY_TO and not self.is_global and not self.card_email:
            raise ValidationError(
                {"mode": _("Directo-Reply-to needs the e-mail on your card: replies go there.")}
            )
        if mode == SenderMode.MICROSOFT365 and data.get("password"):
            self.add_error(
                "password",
                _(
                    "Microsoft 365 OAUTH uses no password. Save, then click “Authenticate "
                    "with Microsoft 365”."
                ),
            )
        if mode == SenderMode.GOOGLE and data.get("password"):
            self.add_error(
                "password",
                _("Google OAUTH uses no password. Save, then click “Sign in with Google”."),
            )
        if mode == SenderMode.SMTP:
            self._clean_smtp(data)
        return data

    @method_decorator(sensitive_variables("data", "password"))
    def _clean_smtp(self, data: dict) -> None:
        if "server" not in data:  # already has its error
            return
        host, port = data["server"]
        login = data.get("login", "").strip()
        data["login"] = login
        security = data.get("security") or Security.SSL
        data["security"] = security
        password = data.get("password", "")
        if password:
            password = normalize_password(password)
            data["password"] = password
        keeps_password = self.profile.has_password and not data.get("clear_password")
        has_password = bool(password) or keeps_password
        # Where the password would be sent: the profile's own server, or the inherited one.
        target = (host, port, security) if host else self.global_server
        data["password_server"] = target
        data["unencrypted_ok"] = False

        if not host:
            if not login:
                self.add_error(
                    "server",
                    _("Enter the server as host:port, for example smtp.gmail.com:465."),
                )
                return
            if self.is_global or self.is_mail_sending_user:
                self.add_error(
                    "server",
                    _(
                        "Enter the server: this configuration is the one others inherit, so "
                        "it must have a server of its own."
                    ),
                )
                return
            if not self.global_has_server:
                self.add_error(
                    "server",
                    _(
                        "Enter the server. Without one, the server comes from the global "
                        "configuration, and it has no SMTP server."
                    ),
                )
                return
        else:
            try:
                check_security(port, security)
            except ValidationError as error:
                self.add_error("security", error)
        if password and not login:
            self.add_error(
                "login",
                _("Enter the user name that goes with this password."),
            )
        if login and not has_password:
            self.add_error(
                "password",
                _(
                    "Enter the password for this user name, or leave the user name empty if "
                    "the server needs no authentication."
                ),
            )
        if host and has_password:
            try:
                check_not_microsoft_basic_auth(host)
            except ValidationError as error:
                self.add_error("password" if password else "server", error)
        if login and has_password and target is not None:
            self._clean_binding(data, target, host=host, password=password)

    def _clean_binding(
        self, data: dict, target: tuple[str, int, str], *, host: str, password: str
    ) -> None:
        """A kept password goes only to the server it was entered for; AUTH in clear only
        with a confirmation given for exactly that server (issue 11, item 5)."""
        shown = self.data.get(self.add_prefix("inherited_server"))
        if password and not host and shown is not None and shown != _server_key(target):
            self.add_error(
                "password",
                _(
                    "The server you inherit changed while this page was open: it is now "
                    "%(server)s. Check it, then enter the password again."
                )
                % {"server": f"{target[0]}:{target[1]}"},
            )
            return
        bound = self.profile.password_server
        if not password and bound != target:
            # A login-only profile whose inherited server moved and whose owner changed
            # nothing here: the password waits (the card says so), the rest may be saved.
            waiting = not host and not self.profile.host and self.profile.mode == SenderMode.SMTP
            if not waiting:
                self.add_error(
                    "password",
                    _(
                        "The server, port or SSL/TLS has changed: enter the password again. "
                        "A stored password is sent only to the server it was entered for."
                    ),
                )
                return
        if target[2] != Security.NONE:
            return
        confirmed = bool(data.get("unencrypted_auth")) or (
            not password and bound == target and self.profile.password_unencrypted_ok
        )
        if not confirmed:
            self.add_error(
                "unencrypted_auth",
                _(
                    "With SSL/TLS “No” the password would cross the network unencrypted. "
                    "Choose StartTLS or SSL, or tick the box to confirm that this server "
                    "offers no encryption."
                ),
            )
            return
        data["unencrypted_ok"] = True

    @property
    def profile_fields(self) -> dict:
        """What `profile_update` writes, from cleaned data: only what the mode uses."""
        data = self.cleaned_data
        fields: dict = {"mode": data["mode"]}
        if data["mode"] in OAUTH_TRANSPORTS:  # the connected address, set by the sign-in
            fields["login"] = data.get("login", "").strip()
        elif data["mode"] == SenderMode.SMTP:
            fields["host"], fields["port"] = data["server"]
            fields["security"] = data["security"]
            fields["login"] = data["login"]
            fields["password"] = data.get("password", "")
            fields["clear_password"] = bool(data.get("clear_password"))
            fields["rate_limit"] = data.get("rate_limit")
            fields["password_server"] = data.get("password_server") if fields["password"] else None
            fields["unencrypted_ok"] = data.get("unencrypted_ok", False)
        return fields


class CompanyForm(forms.Form):
    """The company, whose short name makes the Directo-Reply-to From address (S7.2)."""

    company_name = forms.CharField(
        label=_("Company name"),
        max_length=200,
        validators=[no_control_chars, no_control_chars_decoded],
    )
    company_slug = forms.CharField(
        label=_("Company short name"),
        max_length=63,
        validators=[slug_validator],
    )

    def __init__(self, *args, company: Company | None, **kwargs) -> None:
        kwargs.setdefault(
            "initial",
            {
                "company_name": company.name if company else "",
                "company_slug": company.slug if company else "",
            },
        )
        super().__init__(*args, **kwargs)
        # Here, not on the field: `%` turns the lazy text into a string in the language
        # active at that moment, which at import time is not the user's.
        self.fields["company_slug"].help_text = _(
            "Directo-Reply-to mail is sent from %(example)s."
        ) % {"example": f"<short name>@{settings.EVENT_MAIL_DOMAIN}"}


class MailSendingUserForm(forms.Form):
    """The "mail sending user code" (S6.1): whose configuration everyone inherits."""

    mail_sending_user = forms.ModelChoiceField(
        label=_("Mail sending user code"),
        queryset=User.objects.filter(is_active=True).order_by("code"),
        to_field_name="code",
        required=False,
        help_text=_(
            "That user's sender configuration becomes the basis for everyone's sending. "
            "Leave empty to use the global sender below."
        ),
    )

    def __init__(self, *args, mail_sending_user: User | None, **kwargs) -> None:
        kwargs.setdefault(
            "initial", {"mail_sending_user": mail_sending_user.code if mail_sending_user else None}
        )
        super().__init__(*args, **kwargs)

    def clean_mail_sending_user(self) -> User | None:
        user = self.cleaned_data["mail_sending_user"]
        if user is None:
            return None
        profile = SenderProfile.objects.filter(user=user).first()
        mode = profile.mode if profile else SenderMode.DEFAULT
        if mode == SenderMode.DEFAULT:
            raise ValidationError(
                _(
                    "%(code)s has the Default mail sender and so inherits the global "
                    "configuration. Give %(code)s a sender of their own first."
                ),
                code="mail_sending_user_inherits",
                params={"code": user.code},
            )
        if mode == SenderMode.SMTP and not profile.host:
            raise ValidationError(
                _("%(code)s has no SMTP server of their own. Enter one on their card first."),
                code="mail_sending_user_no_server",
                params={"code": user.code},
            )
        return user


def check_dependents_keep_server(
    *, global_form: SenderProfileForm, sending_form: MailSendingUserForm
) -> bool:
    """Refuse a global change that leaves login-only users (S6.2) without a server.

    The server comes from the mail sending user when one is named (an SMTP one always has a
    server, checked above; a Reply-To or Microsoft 365 one has none), else from the global form.
    """
    sending_user = sending_form.cleaned_data["mail_sending_user"]
    if sending_user is not None:
        form, field = sending_form, "mail_sending_user"
        has_server = SenderProfile.objects.filter(user=sending_user, mode=SenderMode.SMTP).exists()
    else:
        form, field = global_form, "mode"
        has_server = global_form.cleaned_data["mode"] == SenderMode.SMTP
    if has_server:
        return True
    dependent_error = dependents_without_server_error()
    if dependent_error is None:
        return True
    form.add_error(field, dependent_error)
    return False


def dependents_without_server_error() -> str | None:
    """The refusal when login-only users (S6.2) exist and the global server is going away."""
    dependent = list(users_needing_global_server().values_list("code", flat=True))
    if not dependent:
        return None
    return _(
        "These users give only a login and password and take the server from the global "
        "configuration: %(codes)s. Keep an SMTP server here, or change their cards first."
    ) % {"codes": ", ".join(dependent)}
