"""What an SMTP server or the network did, explained with the fix: the catalogue and its matchers.

The transport turns every failure into a `SendError` here: `error_from_reply` for an SMTP reply,
`error_from_exception` for what smtplib, ssl or the socket raised. The error carries a key of
`CATALOGUE`; `explain` renders that key in the reader's language when it is shown, so an event
stored today reads right in whatever language the user picks tomorrow.

Matching (`_RULES`, first match wins): the reply code (RFC 5321 §4.2), the enhanced status code
(RFC 3463, "5.7.8"), the stage of the conversation, and phrases that real servers use (Gmail,
Microsoft 365, Postfix, Exim, aiosmtpd). Specific rules come first; class fallbacks (4xx
transient, 5xx permanent) last. A specific key decides transient or permanent by itself: "451
5.7.3 STARTTLS is required" comes with a 4xx code, but waiting will not fix the configuration.
"""

from __future__ import annotations

import errno
import smtplib
import socket
import ssl
from collections.abc import Mapping

from django.conf import settings
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from . import providers
from .catalogue import Explanation, Reply, Rule, parse_reply, phrase
from .errors import PermanentSendError, SendError, TransientSendError
from .models import Security

# Where in the conversation a failure happened: "dns" (name lookup), "connect" (TCP and the
# greeting), "tls" (the handshake of implicit TLS), then the SMTP commands. An unknown stage is
# not an error: it only turns off the rules that look at the stage.
STAGES = frozenset(
    {"dns", "connect", "tls", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "quit"}
)
_HANDSHAKE_STAGES = frozenset({"connect", "tls", "starttls"})
_BEFORE_SMTP_STAGES = frozenset({"dns", "connect", "tls"})
GENERIC = "generic"
MISSING = "…"  # stands in for a parameter the caller did not give


_ENTRIES = [
    # -- authentication ----------------------------------------------------------------------
    Explanation(
        "auth_failed",
        _("The mail server did not accept the user name or password."),
        _(
            "Check the user name (%(login)s) and enter the password again. For Gmail the "
            "password must be an app password, not your Google password. With Microsoft 365 "
            "OAUTH, authenticate with Microsoft 365 again."
        ),
        transient=False,
    ),
    Explanation(
        "auth_required",
        _("The mail server sends mail only after signing in."),
        _(
            "Enter the mailbox user name and password. If they are already entered, choose "
            "StartTLS or SSL: many servers offer sign-in only over an encrypted connection."
        ),
        transient=False,
    ),
    Explanation(
        "auth_method_unsupported",
        _("The mail server offers no sign-in method that works with a password."),
        _(
            "For Microsoft 365, choose “Microsoft 365 OAUTH” as the mail sender. For other "
            "servers, ask whoever manages the server to allow password sign-in (AUTH PLAIN or "
            "LOGIN) over StartTLS or SSL."
        ),
        transient=False,
    ),
    Explanation(
        "auth_not_offered",
        _("The mail server does not offer sign-in, but a user name is set."),
        _(
            "If the server needs no sign-in (it lets the platform in by IP address), clear the "
            "user name and password. Otherwise check the port: sign-in is usually offered on "
            "port 587 with StartTLS or on port 465 with SSL, often only once the connection is "
            "encrypted."
        ),
        transient=False,
    ),
    # -- encryption ----------------------------------------------------------------------------
    Explanation(
        "starttls_required",
        _("The mail server requires an encrypted connection (StartTLS) first."),
        _("In the SSL/TLS field choose StartTLS (port 587 or 25), or SSL with port 465."),
        transient=False,
    ),
    Explanation(
        "tls_wrong_port",
        _(
            "The server on this port does not start with an encrypted connection, so SSL "
            "cannot be used here."
        ),
        _(
            "You chose %(security)s on port %(port)s. Choose StartTLS for this port (usually "
            "587 or 25), or keep SSL and use port 465."
        ),
        transient=False,
    ),
    Explanation(
        "tls_failed",
        _("The encrypted connection to the mail server could not be set up."),
        _(
            "Check that SSL/TLS matches the port (465 → SSL; 587 and 25 → StartTLS). If it "
            "does, the server may use an outdated encryption method: ask whoever manages it to "
            "enable TLS 1.2 or newer."
        ),
        transient=False,
    ),
    Explanation(
        "starttls_not_offered",
        _("The mail server does not offer StartTLS, which you chose."),
        _(
            "Check the server and port: on port 587 servers normally offer StartTLS; for port "
            "465 choose SSL. Choose “No” (unencrypted) only if whoever manages the server "
            "confirms it has no encryption: the password would then travel unprotected."
        ),
        transient=False,
    ),
    Explanation(
        "cert_expired",
        _("The mail server's security certificate has expired (or is not valid yet)."),
        _(
            "Whoever manages %(host)s must renew its certificate. Until then mail cannot be "
            "sent safely through this server. Check also that the server name is right."
        ),
        transient=False,
    ),
    Explanation(
        "cert_hostname",
        _("The mail server's certificate was issued for a different server name."),
        _(
            "Check the server name %(host)s: enter the name your mail provider gives for SMTP "
            "(for example smtp.gmail.com), not an IP address or another name of the server."
        ),
        transient=False,
    ),
    Explanation(
        "cert_untrusted",
        _(
            "The mail server's certificate is not issued by a trusted authority (for example, "
            "it is self-signed)."
        ),
        _(
            "Whoever manages %(host)s must install a certificate from a recognised certificate "
            "authority (for example Let's Encrypt). To keep your password safe, the platform "
            "does not send through a server it cannot verify."
        ),
        transient=False,
    ),
    # -- sender, relay, recipient, message (S3.6, S7.3) -----------------------------------------
    Explanation(
        "relay_denied",
        _("The mail server refuses to pass on mail for this address or domain."),
        _(
            "Servers usually pass mail on only for signed-in users: enter the mailbox user "
            "name and password. If the server allows clients by IP address, add the platform's "
            "sending addresses: %(ips)s. If your company cannot change its server, choose "
            "“Directo-Reply-to” as the mail sender."
        ),
        transient=False,
    ),
    Explanation(
        "sender_denied",
        _("The mail server does not let this mailbox send from your e-mail address."),
        _(
            "The From address (the e-mail on your user card) must belong to the mailbox you "
            "sign in with (%(login)s), or that mailbox needs the right to send as it. Change "
            "the e-mail on the card, ask whoever manages the server for that right, or choose "
            "“Directo-Reply-to” as the mail sender."
        ),
        transient=False,
    ),
    Explanation(
        "spf_rejected",
        _(
            "The receiving server rejected the mail because your domain's SPF or DMARC "
            "settings do not allow this server to send for it."
        ),
        _(
            "Ask whoever manages your domain to add the sending server to its SPF record. If "
            "your company does not want to change SPF, choose “Directo-Reply-to” as the mail "
            "sender: mail then leaves from the platform's address with your e-mail in Reply-To."
        ),
        transient=False,
    ),
    Explanation(
        "ip_not_allowed",
        _("The mail server does not accept mail from the platform's IP address."),
        _("Ask whoever manages the server to allow the platform's sending addresses: %(ips)s."),
        transient=False,
    ),
    Explanation(
        "recipient_unknown",
        _("The recipient's address does not exist."),
        _(
            "Check the recipient's e-mail address (shown in the server's reply) for typos, "
            "correct it where it was entered, and send again."
        ),
        transient=False,
    ),
    Explanation(
        "message_too_large",
        _("The message is too large for the mail server."),
        _(
            "Make the attachments smaller or send them in several messages. Most servers "
            "accept 20–25 MB in total, and attachments grow by about a third when sent."
        ),
        transient=False,
    ),
    Explanation(
        # Permanent although it passes: the limit resets after hours, beyond any retry backoff.
        "daily_limit",
        _("The mailbox has reached its sending limit."),
        _(
            "The mail provider limits how many messages or recipients a mailbox may send per "
            "day. Wait until the limit resets (usually within 24 hours) and send the rest then, "
            "or send bulk mailings through a server meant for them."
        ),
        transient=False,
    ),
    # -- the server's general answers ----------------------------------------------------------
    Explanation(
        "throttled",
        _("The mail server is busy or limiting how fast mail is sent."),
        _(
            "Nothing to change: the platform tries again later, more slowly. If it keeps "
            "happening during bulk sending, send in smaller batches."
        ),
        transient=True,
    ),
    Explanation(
        "temporary_failure",
        _("The mail server could not take the message right now."),
        _(
            "Nothing to change yet: the platform tries again later. If it keeps failing, show "
            "the server's reply to whoever manages the server."
        ),
        transient=True,
    ),
    Explanation(
        "rejected",
        _("The mail server refused the message."),
        _(
            "The server's reply, shown with this message, gives the reason. Correct what it "
            "names, or show it to whoever manages the server: sent again unchanged, the "
            "message will fail the same way."
        ),
        transient=False,
    ),
    # -- the network ---------------------------------------------------------------------------
    Explanation(
        # Permanent: a refusal means nothing listens on that host and port, or a firewall
        # rejects the platform. That is configuration; retrying for an hour would only delay
        # telling the user. (A server restarting refuses for seconds; the user re-sends.)
        "connection_refused",
        _("The mail server refused the connection."),
        _(
            "Check the server name and port (%(host)s:%(port)s): nothing accepts mail there. "
            "If they are right, a firewall may block the platform: ask whoever manages the "
            "server to allow the platform's sending addresses: %(ips)s."
        ),
        transient=False,
    ),
    Explanation(
        "connection_timeout",
        _("The mail server could not be reached: it did not answer in time."),
        _(
            "Check the server name and port (%(host)s:%(port)s). A firewall may be silently "
            "blocking the platform: ask whoever manages the server to allow the platform's "
            "sending addresses: %(ips)s. The platform tries again later."
        ),
        transient=True,
    ),
    Explanation(
        "connection_lost",
        _("The connection to the mail server was lost during sending."),
        _(
            "Nothing to change yet: the platform tries again later. If it keeps happening, "
            "check that SSL/TLS matches the port and that the server allows the platform's "
            "sending addresses: %(ips)s."
        ),
        transient=True,
    ),
    Explanation(
        "dns_not_found",
        _("The mail server's name does not exist."),
        _(
            "Check the server name %(host)s for typos. Use the SMTP server name your mail "
            "provider gives, for example smtp.gmail.com."
        ),
        transient=False,
    ),
    Explanation(
        "platform_offline",
        _("The platform cannot reach the internet right now."),
        _(
            "This is not your settings: the platform could not look up %(host)s, because its "
            "own name lookup (DNS) or network is down. It tries again later; if this lasts, "
            "tell your administrator."
        ),
        transient=True,
    ),
    Explanation(
        "dns_temporary",
        _("The mail server's name could not be looked up right now."),
        _(
            "Nothing to change yet: the platform tries again later. If it keeps failing, "
            "check the server name %(host)s."
        ),
        transient=True,
    ),
    # -- raised by the platform itself (smtp_settings.transports, outbox.services) --------------
    Explanation(
        "private_host",
        _("The server name points to a private or local network address."),
        _(
            "%(host)s leads to a private or local network address, which the platform does not "
            "connect to. Enter the public name of your mail server, as your mail provider gives "
            "it."
        ),
        transient=False,
    ),
    Explanation(
        "relay_as_own_server",
        _("The server named is the platform's own mail server, not yours."),
        _(
            "%(host)s:%(port)s is the platform's mail server. To send through it, choose the "
            "mail sender Default or Directo-Reply-to on the user card: it then sends within the "
            "platform's limits. As SMTP, enter your company's own mail server, as your mail "
            "provider gives it."
        ),
        transient=False,
    ),
    # -- secrets bound to their server (issue 11, item 5) ---------------------------------------
    Explanation(
        "password_bound_elsewhere",
        _(
            "The message was not sent: the stored password (or Microsoft 365 sign-in) was "
            "entered for another server."
        ),
        _(
            "The mail would go to %(host)s:%(port)s, and the platform sends a password only to "
            "the server, port and SSL/TLS it was entered for. Enter the password again on the "
            "user card (or, for the global sender, in the system settings), then send again."
        ),
        transient=False,
    ),
    Explanation(
        "password_reentry",
        _("The server you inherit has changed: your password is not sent to it."),
        _(
            "The global mail server is now %(host)s:%(port)s. Your password was entered for "
            "the previous server, so it waits for you: enter it again on your user card. Until "
            "then your mail is not sent."
        ),
        transient=False,
    ),
    Explanation(
        "unencrypted_auth_unconfirmed",
        _("The message was not sent: the password would have crossed the network unencrypted."),
        _(
            "SSL/TLS is “No” for %(host)s:%(port)s. Choose StartTLS or SSL on the user card, "
            "or, if whoever manages the server confirms it has no encryption, enter the "
            "password again and tick the confirmation for this server."
        ),
        transient=False,
    ),
    Explanation(
        "relay_unavailable",
        _("The platform's mail server does not answer right now."),
        _(
            "Nothing to change on your card. Try again in a few minutes; if it keeps failing, "
            "tell your administrator."
        ),
        transient=False,  # shown by the connection test only; nothing is retried for it
    ),
    Explanation(
        "sender_config",
        _("The sender settings cannot be used as they are."),
        _("%(message)s"),
        transient=False,
    ),
    Explanation(
        "bounced",
        _("The message came back undelivered: the recipient's mail server refused it."),
        _(
            "The receiving server's reply is shown with it. Check the address %(address)s with "
            "the customer, or reach them another way; later bulk jobs skip this address."
        ),
        transient=False,
    ),
    # -- why a recipient's server refused it (bounces/reasons.py) --------------------------
    Explanation(
        "bounce_mailbox_full",
        _("The message came back: the recipient's mailbox is full."),
        _(
            "The customer must empty their mailbox; send again later, or reach %(address)s "
            "another way meanwhile."
        ),
        transient=False,
    ),
    Explanation(
        "bounce_host_unknown",
        _("The message came back: the domain of the address does not exist or takes no mail."),
        _(
            "Check the part after @ in %(address)s with the customer (a typo, or a company "
            "that changed its domain) and correct it on the customer's record."
        ),
        transient=False,
    ),
    Explanation(
        "bounce_expired",
        _("The message came back: the recipient's server could not be reached for days."),
        _(
            "The customer's mail server did not take the message in time. Send again later; if "
            "it happens again, tell the customer their mail server for %(address)s is down."
        ),
        transient=False,
    ),
    Explanation(
        "bounce_spam",
        _("The message came back: the recipient's server took it for spam or a virus."),
        _(
            "Ask the customer to allow mail from your address, or send without the attachment "
            "or link that may have set off their filter."
        ),
        transient=False,
    ),
    Explanation(
        "bounce_blocked",
        _("The message came back: the recipient's server refused the sender by its policy."),
        _(
            "The receiving server did not accept mail from this sender or server (a block list, "
            "SPF/DKIM/DMARC, or its own rules). The reply shown says which; ask the customer's "
            "IT to allow your address, or your administrator to check the sending domain."
        ),
        transient=False,
    ),
    Explanation(
        "bounce_suspended",
        _("The message came back: the recipient's mailbox is disabled or suspended."),
        _(
            "The address %(address)s exists but does not take mail now. Ask the customer for "
            "an address they use."
        ),
        transient=False,
    ),
    Explanation(
        "bounce_has_moved",
        _("The message came back: the recipient has moved to another address."),
        _(
            "The reply shown often names the new address: confirm it with the customer and "
            "correct %(address)s on their record."
        ),
        transient=False,
    ),
    Explanation(
        "bounce_network",
        _("The message came back: the recipient's server could not be connected to."),
        _(
            "A network or connection problem at the receiving side. Send again later; if it "
            "persists, tell the customer their mail server for %(address)s does not answer."
        ),
        transient=False,
    ),
    Explanation(
        "bounce_system",
        _("The message came back: the recipient's mail system had an error."),
        _(
            "The fault is at the receiving side, not with you or the address. Send again "
            "later; if it comes back again, tell the customer."
        ),
        transient=False,
    ),
    Explanation(
        "complaint",
        _("The recipient marked the message as spam."),
        _(
            "Their mail provider reported it (a feedback report). Nothing bounced, but more "
            "such reports hurt the delivery of everyone's mail: ask %(address)s whether they "
            "still want mail from you, and do not send them letters they did not ask for."
        ),
        transient=False,
    ),
    Explanation(
        "bounce_delayed",
        _("Delivery is delayed: the recipient's mail server has not taken the message yet."),
        _(
            "Nothing to do yet: delivery to %(address)s is tried again for a few days. If it "
            "finally fails, it appears here as undelivered."
        ),
        transient=False,
    ),
    Explanation(
        "address_bounced",
        _("The message was not sent: mail to the customer's address came back undelivered."),
        _(
            "An earlier message to %(address)s bounced (see Events). Correct the address on "
            "the customer's record, or send again with “Also to addresses that bounced "
            "before”."
        ),
        transient=False,
    ),
    Explanation(
        "template_error",
        _("The message was not sent: its mail template does not work for this record."),
        _(
            "%(message)s Staff can correct the template under Mail templates (preview it on "
            "this record there), then send again."
        ),
        transient=False,
    ),
    Explanation(
        "file_missing",
        _("The message was not sent: its attachment (or the invoice's PDF) was not found."),
        _(
            "The worker that sent it cannot read the file another process stored. If the "
            "workers run on more than one machine, an administrator must set "
            "FILE_STORAGE=database for every process; then send the message again."
        ),
        transient=False,
    ),
    Explanation(
        "header_line_break",
        _("The message was not sent: its %(header)s header would contain a line break."),
        _(
            "A name, subject or address holds a hidden line break (an encoded one, such as "
            "“=0D=0A”). Correct it on the card or where the message was written, then send "
            "again."
        ),
        transient=False,
    ),
    Explanation(
        "no_recipient",
        _("The message was not sent: the customer has no e-mail address."),
        _("Enter the e-mail address on the customer's record, then send again."),
        transient=False,
    ),
    Explanation(
        "too_many_recipients",
        _("The message was not sent: it has more recipients than one message may have."),
        _(
            "The platform limits the recipients of one message (To, CC, BCC and the card's "
            "BCC together; an administrator sets the number). Keep fewer addresses on the "
            "customer's record, or send several messages."
        ),
        transient=False,
    ),
    Explanation(
        "bad_recipient",
        _("The message was not sent: the recipient's e-mail address is missing or not valid."),
        _(
            "Correct the e-mail address on the customer's record (it reads: “%(address)s”), "
            "then send again."
        ),
        transient=False,
    ),
    Explanation(
        "possibly_duplicated",
        _("Sending was interrupted at a moment when the message may already have gone out."),
        _(
            "Nothing to do: the platform sends the message again. The recipient may receive "
            "it twice."
        ),
        transient=True,
    ),
    Explanation(
        GENERIC,
        _("Sending failed for a reason the platform does not recognise."),
        _(
            "Read the server's reply shown with this message: it usually names the problem. "
            "Check the mail server, port, SSL/TLS, user name and password, then try again. If "
            "it keeps failing, show the reply to whoever manages your mail server."
        ),
        transient=False,
    ),
]
# The providers' own entries (smtp_settings/providers/*) join the catalogue.
CATALOGUE: dict[str, Explanation] = {
    entry.key: entry for entry in (*_ENTRIES, *providers.explanations())
}


# -- rendering ---------------------------------------------------------------------------------
class _Params(dict):
    """Parameters for a fix text: a missing one renders as "…" instead of raising KeyError."""

    def __missing__(self, key: str) -> str:
        return MISSING


def _render_params(params: Mapping | None) -> _Params:
    rendered = _Params()
    for name, value in (params or {}).items():
        if value is None or value == "":
            continue
        if name == "security" and value in Security.values:
            value = Security(value).label
        elif name == "ips" and not isinstance(value, str):
            value = ", ".join(str(ip) for ip in value)
        rendered[name] = str(value)
    if "ips" not in rendered:
        # The sending IPs are the platform's (S3.6): the caller need not pass them.
        ips = getattr(settings, "PLATFORM_SENDING_IPS", None)
        rendered["ips"] = ", ".join(ips) if ips else gettext("ask your administrator for the list")
    return rendered


def explain(key: str, params: Mapping | None = None) -> dict[str, str]:
    """Title and fix of `key` in the active language; an unknown key gets the generic entry."""
    entry = CATALOGUE.get(key) or CATALOGUE[GENERIC]
    return {"title": str(entry.title), "fix": str(entry.fix) % _render_params(params)}


# -- replies ---------------------------------------------------------------------------------
_Reply, _Rule, _parse, _p = Reply, Rule, parse_reply, phrase
# The providers' rules first: they know their servers' exact words (smtp_settings/providers/*).
_RULES: tuple[_Rule, ...] = (
    *providers.rules(),
    # "530 5.7.0 Must issue a STARTTLS command first." (Gmail, Postfix); Microsoft: "451 5.7.3
    # STARTTLS is required to send mail"; RFC 4954: "538 5.7.11 Encryption required for
    # requested authentication mechanism".
    _Rule(
        "starttls_required",
        phrases=_p(
            r"must issue a starttls|starttls (command )?(is )?required|"
            r"(tls|encryption|starttls) (is )?required|"
            r"requires? an? (secure|encrypted|tls) connection"
        ),
    ),
    # "530 5.7.0 Authentication Required" (Gmail); "530 5.7.57 Client not authenticated to send
    # mail" (Microsoft); Postfix: "553 5.7.1 <a@b>: Sender address rejected: not logged in".
    _Rule(
        "auth_required",
        classes="5",
        statuses=("5.7.57",),
        phrases=_p(
            r"authentication (is )?required|not authenticated|not logged in|"
            r"authentication needed|must (authenticate|log ?in)"
        ),
    ),
    _Rule("auth_required", codes=frozenset({530})),  # RFC 4954 §6: authentication required
    # "504 5.5.4 Unrecognized authentication type"; RFC 4954: "534 5.7.9 Authentication
    # mechanism is too weak"; smtplib: "No suitable authentication method found."
    _Rule(
        "auth_method_unsupported",
        classes="5",
        phrases=_p(
            r"unrecognized authentication type|authentication mechanism (is )?"
            r"(not supported|too weak|not available)|no suitable authentication method"
        ),
    ),
    _Rule("auth_method_unsupported", codes=frozenset({504}), stages=frozenset({"auth"})),
    # Gmail: "535-5.7.8 Username and Password not accepted."; Microsoft: "535 5.7.3
    # Authentication unsuccessful"; Exim: "535 Incorrect authentication data"; aiosmtpd:
    # "535 5.7.8 Authentication credentials invalid".
    _Rule(
        "auth_failed",
        classes="5",
        statuses=("5.7.8",),
        phrases=_p(
            r"username and password not accepted|authentication (unsuccessful|failed)|"
            r"authentication credentials invalid|incorrect authentication data|"
            r"invalid (login|credentials|user ?name or password)|bad credentials"
        ),
    ),
    _Rule("auth_failed", codes=frozenset({535})),
    # The platform's IP is refused: "550 5.7.606 Access denied, banned sending IP" (Microsoft);
    # Postfix: "554 5.7.1 <host[ip]>: Client host rejected: Access denied"; DNS blocklists.
    _Rule(
        "ip_not_allowed",
        classes="5",
        statuses=("5.7.606", "5.7.511"),
        phrases=_p(
            r"client host (\S+ )?(rejected|blocked)|blocked using|banned sending ip|"
            r"\bip (address )?(is )?(not allowed|not authorized|blocked|blacklisted|listed)|"
            r"\b(blacklist|blocklist|dnsbl|spamhaus)"
        ),
    ),
    # Gmail: "550-5.4.5 Daily user sending limit exceeded."; Microsoft: "554 5.2.0
    # STOREDRV.Submission.Exception:SubmissionQuotaExceededException", "550 5.1.90 ... you've
    # reached your daily limit for message recipients".
    _Rule(
        "daily_limit",
        classes="5",
        statuses=("5.4.5", "5.1.90"),
        phrases=_p(
            r"daily (user )?sending (quota|limit)|sending (quota|limit) (exceeded|reached)|"
            r"submissionquotaexceeded|daily limit|recipientratelimit|messageratelimit"
        ),
    ),
    # Gmail: "552-5.2.3 Your message exceeded Google's message size limits."; Postfix and
    # Microsoft: "552 5.3.4 Message size exceeds fixed (maximum message size|limit)"; aiosmtpd:
    # "552 Error: Too much mail data". Not "552 5.2.2" (the recipient's mailbox is full).
    _Rule(
        "message_too_large",
        classes="5",
        statuses=("5.3.4", "5.2.3"),
        phrases=_p(
            r"message size|size limit|exceeds? (the )?(fixed |maximum )*(message )?size|"
            r"message (is )?too (large|big)|too much mail data"
        ),
    ),
    # Postfix: "554 5.7.1 <x@y>: Relay access denied"; Exchange: "550 5.7.54 SMTP; Unable to
    # relay recipient in non-accepted domain", "550 5.7.64 TenantAttribution; Relay Access
    # Denied"; "550 5.7.1 Relaying denied".
    _Rule(
        "relay_denied",
        statuses=("5.7.54", "5.7.64"),
        phrases=_p(
            r"relay(ing)? (access )?(denied|not permitted|prohibited|not allowed)|"
            r"unable to relay|not permitted to relay|we do not relay|tenantattribution"
        ),
    ),
    # Gmail: "550-5.7.26 This mail has been blocked because the sender is unauthenticated ...
    # DMARC"; "5.7.23 ... SPF validation error"; "550-5.7.27 ... SPF".
    _Rule(
        "spf_rejected",
        classes="5",
        statuses=("5.7.23", "5.7.26", "5.7.27"),
        phrases=_p(r"\bspf\b|\bdmarc\b|sender policy framework"),
    ),
    # Microsoft: "554 5.2.252 SendAsDenied; a@b not allowed to send as c@d", "554 5.2.0
    # STOREDRV.Submission.Exception:SendAsDeniedException"; Exchange: "550 5.7.60 SMTP; Client
    # does not have permissions to send as this sender"; Postfix: "553 5.7.1 <c@d>: Sender
    # address rejected: not owned by user a@b".
    _Rule(
        "sender_denied",
        classes="5",
        statuses=("5.7.60", "5.2.252", "5.1.7", "5.1.8"),
        phrases=_p(
            r"sender address rejected|sendasdenied|not allowed to send as|not owned by|"
            r"permissions? to send as|sender (denied|not allowed|rejected)|"
            r"from address (is )?not (allowed|permitted|verified)"
        ),
    ),
    # Gmail: "550-5.1.1 The email account that you tried to reach does not exist."; Postfix:
    # "550 5.1.1 <x@y>: Recipient address rejected: User unknown in local recipient table";
    # Microsoft: "550 5.1.10 RESOLVER.ADR.RecipientNotFound".
    _Rule(
        "recipient_unknown",
        classes="5",
        statuses=("5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"),
        phrases=_p(
            r"does not exist|user unknown|unknown user|no such (user|mailbox|recipient)|"
            r"recipient ?not ?found|invalid recipient|recipient address rejected|"
            r"unrouteable address|mailbox unavailable"
        ),
    ),
    # A bare "550 5.7.1" means relay refused at RCPT and sender refused at MAIL FROM.
    _Rule("relay_denied", classes="5", stages=frozenset({"rcpt"}), statuses=("5.7.1",)),
    _Rule("sender_denied", classes="5", stages=frozenset({"mail"}), statuses=("5.7.1",)),
    _Rule("sender_denied", codes=frozenset({550, 553}), stages=frozenset({"mail"})),
    _Rule("recipient_unknown", codes=frozenset({550, 551, 553}), stages=frozenset({"rcpt"})),
    # A greeting that refuses the connection: the server does not want the platform's address.
    _Rule("ip_not_allowed", classes="5", stages=frozenset({"connect", "tls"})),
    # Throttling: "421-4.7.0 Try again later, closing connection." (Gmail), "454-4.7.0 Too many
    # login attempts", "450-4.2.1 ... receiving mail too quickly", "432 4.3.2 STOREDRV.
    # ClientSubmit; sender thread limit exceeded" (Microsoft), greylisting.
    _Rule("throttled", codes=frozenset({421})),
    _Rule(
        "throttled",
        classes="4",
        statuses=("4.7.", "4.3.2"),
        phrases=_p(
            r"try again later|too many|too (quickly|fast)|rate.?limit|throttl|slow down|"
            r"thread limit|greylist"
        ),
    ),
    _Rule("temporary_failure", classes="4"),
    _Rule("auth_failed", classes="5", stages=frozenset({"auth"})),
    _Rule("rejected", classes="5"),
)


def _key_for_reply(code: int, text: str, stage: str) -> str:
    reply = _parse(code, text, stage)
    return next((rule.key for rule in _RULES if rule.matches(reply)), GENERIC)


def _error(key: str, reply: str, params: Mapping | None) -> SendError:
    entry = CATALOGUE[key]
    cls = TransientSendError if entry.transient else PermanentSendError
    return cls(reply, explanation=key, params=dict(params) if params else None)


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def error_from_reply(
    code: int, text: str | bytes, *, stage: str, params: Mapping | None = None
) -> SendError:
    """The error for an SMTP reply; `.reply` is the reply as the server said it."""
    text = _text(text)
    return _error(_key_for_reply(code, text, stage), f"{code} {text}", params)


# -- exceptions --------------------------------------------------------------------------------
# OpenSSL's reasons when the server's first bytes are not TLS: it answered in plain SMTP ("220
# ..."), so SSL was chosen for a StartTLS or unencrypted port.
_NOT_TLS_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "UNKNOWN_PROTOCOL",
        "HTTP_REQUEST",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LAYER_FAILURE",
        "UNEXPECTED_RECORD",
    }
)
# X509_V_ERR_* (openssl/x509_vfy.h).
_CERT_EXPIRED = frozenset({9, 10})  # CERT_NOT_YET_VALID, CERT_HAS_EXPIRED
_CERT_HOSTNAME = frozenset({62, 64})  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
_UNREACHABLE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETDOWN})


def _certificate_key(exc: ssl.SSLCertVerificationError) -> str:
    code = getattr(exc, "verify_code", None)
    message = (getattr(exc, "verify_message", None) or str(exc)).lower()
    if code in _CERT_EXPIRED or "expired" in message or "not yet valid" in message:
        return "cert_expired"
    if code in _CERT_HOSTNAME or "mismatch" in message or "doesn't match" in message:
        return "cert_hostname"
    return "cert_untrusted"


def _ssl_key(exc: ssl.SSLError, stage: str) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _certificate_key(exc)
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "tls_failed" if stage in _HANDSHAKE_STAGES else "connection_lost"
    reason = (getattr(exc, "reason", None) or "").upper()
    not_tls = reason in _NOT_TLS_REASONS or "wrong version" in str(exc).lower()
    if not_tls and stage in _BEFORE_SMTP_STAGES:  # implicit TLS ("SSL") met a plain server
        return "tls_wrong_port"
    return "tls_failed"


def _key_for_exception(exc: BaseException, stage: str) -> str:
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        message = str(exc).lower()
        if "starttls" in message or (stage == "starttls" and "auth" not in message):
            return "starttls_not_offered"
        if "auth" in message or stage == "auth":
            return "auth_not_offered"
        return GENERIC
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        # smtplib turns a timeout while waiting for a reply into "Connection unexpectedly
        # closed: timed out": a server that accepts but never greets is a timeout, not a loss.
        if isinstance(exc.__context__, TimeoutError) or "timed out" in str(exc):
            return _key_for_exception(TimeoutError(), stage)
        return "connection_lost"
    if isinstance(exc, smtplib.SMTPException):
        # smtplib's own words when the server offers AUTH but no method it can use.
        if "no suitable authentication method" in str(exc).lower():
            return "auth_method_unsupported"
        return GENERIC
    if isinstance(exc, ssl.SSLError):
        return _ssl_key(exc, stage)
    if isinstance(exc, socket.gaierror):
        return "dns_temporary" if exc.errno == socket.EAI_AGAIN else "dns_not_found"
    if isinstance(exc, socket.herror):
        return "dns_not_found"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, TimeoutError):
        return "connection_timeout" if stage in _BEFORE_SMTP_STAGES else "connection_lost"
    if isinstance(exc, ConnectionError):  # reset, aborted, broken pipe
        return "connection_lost"
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return "connection_timeout"
    return GENERIC


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def error_from_exception(
    exc: BaseException, *, stage: str, params: Mapping | None = None
) -> SendError:
    """The error for what smtplib, ssl or the socket raised at `stage`."""
    if isinstance(exc, SendError):
        return exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused) and exc.recipients:
        # Every recipient was refused (smtplib raises only then). A permanent refusal decides:
        # retrying cannot deliver to that address.
        refused = [(addr, code, _text(msg)) for addr, (code, msg) in exc.recipients.items()]
        _addr, code, text = next(
            (item for item in refused if str(item[1]).startswith("5")), refused[0]
        )
        reply = "\n".join(f"{a}: {c} {t}" for a, c, t in refused)
        return _error(_key_for_reply(code, text, stage), reply, params)
    if isinstance(exc, smtplib.SMTPResponseException):
        return error_from_reply(exc.smtp_code, exc.smtp_error, stage=stage, params=params)
    return _error(_key_for_exception(exc, stage), _describe(exc), params)
