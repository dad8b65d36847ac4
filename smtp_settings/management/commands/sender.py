"""`manage.py sender show|test|set|domain`: the effective sender of a user, its connection
test, changing it from a shell, and the domain check of an address (SPF/DMARC for the platform).

`set` runs the same forms as the card and system settings pages: the same input is refused
with the same message, and a refused command changes nothing.
"""

from __future__ import annotations

import json
import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils.translation import gettext as _

from accounts.models import User

from ...diagnose import connection_test
from ...domaincheck import DomainError, check_domain, verdict_lines
from ...forms import MailSendingUserForm, SenderProfileForm, check_dependents_keep_server
from ...models import Security, SenderMode
from ...resolve import SenderConfigError
from ...selectors import (
    domain_check_stored,
    global_profile_get,
    global_server_get,
    sender_config_for,
    system_settings_get,
    user_profile_get,
)
from ...services import (
    domain_check_save,
    mail_sending_user_set,
    profile_test_passed,
    profile_update,
)


class Command(BaseCommand):
    help = "Show or change how a user's mail is sent."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        show = sub.add_parser("show", help="The effective sender of USER, never a secret.")
        show.add_argument("user", metavar="USER", help="user code")
        show.add_argument("--json", action="store_true", help="print JSON")

        test = sub.add_parser(
            "test", help="Test USER's saved sender step by step; nothing is sent."
        )
        test.add_argument("user", metavar="USER", help="user code")
        test.add_argument("--to", metavar="ADDRESS", help="recipient for RCPT TO (default: own)")
        test.add_argument("--json", action="store_true", help="print JSON")

        domain = sub.add_parser(
            "domain",
            help="May the platform send From this address's domain? (MX, SPF, DMARC)",
        )
        domain.add_argument("address", metavar="ADDRESS-OR-DOMAIN")
        domain.add_argument("--json", action="store_true", help="print JSON")
        domain.add_argument("--fresh", action="store_true", help="look up again, not cached")

        set_ = sub.add_parser("set", help="Change USER's sender, or the global one.")
        who = set_.add_mutually_exclusive_group(required=True)
        who.add_argument("user", metavar="USER", nargs="?", help="user code")
        who.add_argument("--global", dest="is_global", action="store_true")
        set_.add_argument("--mode", choices=[m.value for m in SenderMode])
        set_.add_argument("--server", metavar="HOST:PORT", help="empty string to clear")
        set_.add_argument("--security", choices=[s.value for s in Security])
        set_.add_argument("--login", help="empty string for no authentication")
        set_.add_argument(
            "--password-stdin", action="store_true", help="read the password from stdin"
        )
        set_.add_argument("--clear-password", action="store_true")
        set_.add_argument(
            "--allow-unencrypted-auth",
            action="store_true",
            help="with --security none: confirm the password may cross the network "
            "unencrypted to this server",
        )
        set_.add_argument(
            "--rate-limit",
            metavar="N",
            help="messages a minute the server accepts; empty string for no limit",
        )
        set_.add_argument(
            "--mail-sending-user",
            metavar="USER",
            help="with --global: name the mail sending user (empty string to clear)",
        )

    def handle(self, *args, action: str, **options) -> None:
        if action == "show":
            self._show(options["user"], as_json=options["json"])
        elif action == "test":
            self._test(options["user"], to=options["to"], as_json=options["json"])
        elif action == "domain":
            self._domain(options["address"], as_json=options["json"], fresh=options["fresh"])
        else:
            self._set(options)

    # -- test ------------------------------------------------------------------------------
    def _test(self, code: str, *, to: str | None, as_json: bool) -> None:
        user = _user(code)
        try:
            config = sender_config_for(user=user)
        except SenderConfigError as error:
            raise CommandError(str(error.message)) from None
        result = connection_test(config, to=to or user.email or config.from_email)
        # A pass of an own server as saved unlocks its mass mailing (issue 14, item 3).
        unlocked = (
            result.passed
            and config.needs_connection_test
            and profile_test_passed(user=user, config=config)
        )
        if as_json:
            data = {**result.as_dict(), "mass_mailing_unlocked": unlocked}
            self.stdout.write(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            if result.config_error:
                self.stdout.write(result.config_error)
            for step in result.steps:
                mark = {"ok": "ok  ", "failed": "FAIL", "skipped": "-   "}[step.outcome]
                self.stdout.write(
                    f"[{mark}] {step.label}" + (f": {step.detail}" if step.detail else "")
                )
                if step.reply:
                    self.stdout.write(f"       {step.reply}")
                if step.explanation:
                    self.stdout.write(f"       {step.explanation['title']}")
                    self.stdout.write(f"       {step.explanation['fix']}")
            if unlocked:
                self.stdout.write(_("The connection test passed: mass mailing is available now."))
        if not result.passed:
            raise CommandError(_("The connection test failed."))

    # -- domain ----------------------------------------------------------------------------
    def _domain(self, address: str, *, as_json: bool, fresh: bool) -> None:
        try:
            verdict = check_domain(address, use_cache=not fresh)
        except DomainError as error:
            raise CommandError(str(error)) from None
        domain_check_save(verdict=verdict)  # Default mode goes by the latest verdict
        if as_json:
            data = {**verdict.as_json(), "headline": verdict.headline}
            self.stdout.write(json.dumps(data, indent=2, ensure_ascii=False))
            return
        for line in verdict_lines(verdict):
            self.stdout.write(line)

    # -- show ------------------------------------------------------------------------------
    def _show(self, code: str, *, as_json: bool) -> None:
        user = _user(code)
        try:
            config = sender_config_for(user=user)
        except SenderConfigError as error:
            if as_json:
                self.stdout.write(
                    json.dumps(
                        {"user": user.code, "error": error.code, "message": str(error.message)},
                        indent=2,
                    )
                )
            raise CommandError(str(error.message)) from None
        data = {
            "user": user.code,
            "mode": config.mode,
            "transport": config.transport,
            "server": config.host,
            "port": config.port,
            "security": config.security,
            "rate_limit": config.rate_limit,
            "login": config.login,
            "password_set": config.has_secret,
            "from": config.from_email,
            "from_name": config.from_name,
            "reply_to": config.reply_to,
            "envelope_sender": config.envelope_display(),
            "bcc": config.bcc,
            "signature_set": bool(config.signature),
            "mass_mailing_allowed": config.mass_mailing_allowed,
            "source": dict(config.source),
        }
        # The card e-mail's domain check as stored (what Default mode goes by; no DNS here).
        stored = domain_check_stored(user.email) if user.email else None
        domain = {**stored[0].as_json(), "headline": stored[0].headline} if stored else None
        if as_json:
            data["domain_check"] = domain
            self.stdout.write(json.dumps(data, indent=2, ensure_ascii=False))
            return
        source = data.pop("source")
        keys = {
            "server": "server",
            "port": "server",
            "security": "server",
            "rate_limit": "server",
            "login": "login",
            "password_set": "password",
            "from": "from",
            "from_name": "from",
            "reply_to": "reply_to",
            "envelope_sender": "envelope",
            "bcc": "bcc",
            "mode": "mode",
            "signature_set": "signature",
        }
        for key, value in data.items():
            origin = source.get(keys.get(key, ""), "")
            shown = "-" if value in ("", None) else value
            self.stdout.write(f"{key:22} {shown}" + (f"   ({origin})" if origin else ""))
        checked = f"{domain['headline']}" if domain else _("not checked (sender domain ADDRESS)")
        self.stdout.write(f"{'domain_check':22} {checked}")

    # -- set -------------------------------------------------------------------------------
    @transaction.atomic
    def _set(self, options: dict) -> None:
        is_global = options["is_global"]
        if options["mail_sending_user"] is not None and not is_global:
            raise CommandError(_("--mail-sending-user goes with --global."))
        user = None if is_global else _user(options["user"])
        profile = global_profile_get() if is_global else user_profile_get(user=user)
        password = ""
        if options["password_stdin"]:
            password = sys.stdin.readline().rstrip("\r\n")
            if not password:
                raise CommandError(_("No password was given on standard input."))

        data = {
            "mode": options["mode"] or profile.mode,
            "server": profile.server if options["server"] is None else options["server"],
            "security": options["security"] or profile.security,
            "login": profile.login if options["login"] is None else options["login"],
            "password": password,
            "clear_password": "on" if options["clear_password"] else "",
            "unencrypted_auth": "on" if options["allow_unencrypted_auth"] else "",
            "rate_limit": profile.rate_limit
            if options["rate_limit"] is None
            else options["rate_limit"],
        }
        if is_global:
            self._set_global(data, profile, options["mail_sending_user"])
            target = _("global")
        else:
            system = system_settings_get()
            form = SenderProfileForm(
                data,
                profile=profile,
                is_mail_sending_user=system.mail_sending_user_id == user.pk,
                card_email=user.email,
                global_server=global_server_get(),
            )
            _raise_errors(form)
            profile_update(user=user, **form.profile_fields)
            target = user.code
        self.stdout.write(self.style.SUCCESS(_("Saved the sender of %(who)s.") % {"who": target}))

    def _set_global(self, data: dict, profile, mail_sending_code: str | None) -> None:
        system = system_settings_get()
        current = system.mail_sending_user.code if system.mail_sending_user else ""
        sending_form = MailSendingUserForm(
            {"mail_sending_user": current if mail_sending_code is None else mail_sending_code},
            mail_sending_user=system.mail_sending_user,
        )
        global_form = SenderProfileForm(
            {f"global-{k}": v for k, v in data.items()},
            profile=profile,
            is_global=True,
            prefix="global",
        )
        _raise_errors(sending_form, global_form)
        if not check_dependents_keep_server(global_form=global_form, sending_form=sending_form):
            _raise_errors(sending_form, global_form)
        mail_sending_user_set(user=sending_form.cleaned_data["mail_sending_user"])
        profile_update(user=None, **global_form.profile_fields)


def _user(code: str) -> User:
    return User.objects.get_for_command(code)


def _raise_errors(*forms) -> None:
    lines = []
    for form in forms:
        if form.is_valid():
            continue
        for field, errors in form.errors.items():
            name = form.fields[field].label if field in form.fields else ""
            lines.extend(f"{name}: {error}" if name else str(error) for error in errors)
    if lines:
        raise CommandError("\n".join(lines))
