"""Microsoft Graph `sendMail` (issue 15, item 3): Microsoft 365 mail for tenants with SMTP AUTH
turned off. The MIME the worker built is posted as it is (base64, `Content-Type: text/plain`),
so headers, Reply-To, attachments and Message-ID stay ours; Graph takes the recipients from the
To, Cc and Bcc headers, so envelope recipients that no header names (the card's BCC) are added
as a Bcc header, which Exchange does not pass on.

Answers: 202 accepted; 429 and 503/504 "slow down" (Retry-After honoured: the sender pauses as
for an SMTP 421); 401 once more with a refreshed token, then "authenticate again"; Graph's error
codes joined to the explanation catalogue.
https://learn.microsoft.com/en-us/graph/api/user-sendmail
https://learn.microsoft.com/en-us/graph/outlook-send-mime-message
https://learn.microsoft.com/en-us/graph/throttling
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable
from email.parser import BytesHeaderParser
from email.utils import getaddresses

import requests
from django.views.decorators.debug import sensitive_variables

from smtp_settings.errors import PermanentSendError, TransientSendError
from smtp_settings.transports import Transport

logger = logging.getLogger(__name__)

TIMEOUT = 60  # seconds: a 30 MB message takes a while to post
MAX_RETRY_AFTER = 3600
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# Graph's error codes -> the catalogue's keys (and whether waiting helps).
_ERRORS = {
    "ErrorSendAsDenied": ("sender_denied", False),
    "ErrorMessageSizeExceeded": ("message_too_large", False),
    "ErrorMessageTransientError": ("temporary_failure", True),
    "ErrorInvalidRecipients": ("bad_recipient", False),
    "ErrorAccessDenied": ("m365_graph_consent", False),
    "AccessDenied": ("m365_graph_consent", False),
    "MailboxNotEnabledForRESTAPI": ("m365_graph_mailbox", False),
    "ErrorMailboxNotEnabledForRESTAPI": ("m365_graph_mailbox", False),
    "ErrorQuotaExceeded": ("daily_limit", False),
    "ErrorExceededMessageLimit": ("daily_limit", False),
}


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if not value.isdigit():
        return None
    return float(min(int(value), MAX_RETRY_AFTER))


def with_bcc(data: bytes, recipients: list[str]) -> bytes:
    """The message with a Bcc header naming the envelope recipients that To and Cc do not (Graph
    sends to the headers' addresses only). Unchanged when there are none."""
    match = _HEADER_END.search(data)
    head = data[: match.start()] if match else data
    headers = BytesHeaderParser().parsebytes(head + b"\r\n\r\n")
    shown = [*headers.get_all("To", []), *headers.get_all("Cc", [])]
    named = {address.lower() for _name, address in getaddresses([str(v) for v in shown])}
    hidden = [r for r in recipients if r.lower() not in named]
    if not hidden:
        return data
    newline = b"\r\n" if b"\r\n" in head else b"\n"
    return head + newline + b"Bcc: " + ", ".join(hidden).encode("ascii") + data[len(head) :]


class GraphTransport(Transport):
    """POST /me/sendMail with the connected account's token (`token(force_refresh)` returns
    (address, token) and refuses any endpoint but the one the account was connected for)."""

    def __init__(self, *, endpoint: str, token: Callable[[bool], tuple[str, str]]) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.session: requests.Session | None = None
        self._bearer: str | None = None

    def open(self) -> None:
        if self.session is None:
            self.session = requests.Session()
        if self._bearer is None:
            self._bearer = self.token(False)[1]

    def check(self) -> str:
        """The connection test: a Graph token for Mail.Send is taken (nothing is sent)."""
        address, self._bearer = self.token(False)
        return f"Microsoft Graph {self.endpoint}: {address} (Mail.Send)"

    def close(self) -> None:
        session, self.session, self._bearer = self.session, None, None
        if session is not None:
            session.close()

    @sensitive_variables("bearer")
    def _post(self, body: bytes) -> requests.Response:
        self.open()
        bearer = self._bearer
        try:
            return self.session.post(
                f"{self.endpoint}/me/sendMail",
                data=body,
                headers={"Authorization": f"Bearer {bearer}", "Content-Type": "text/plain"},
                timeout=TIMEOUT,
                allow_redirects=False,
            )
        except requests.ConnectionError as error:
            # Refused or reset before an answer: the request may not have been read at all.
            raise TransientSendError(
                "", explanation="connection_lost", params={"host": self.endpoint}
            ) from error
        except requests.Timeout as error:
            failed = TransientSendError(
                "", explanation="connection_timeout", params={"host": self.endpoint}
            )
            # The whole message was posted; Graph may have taken it without answering.
            failed.maybe_delivered = isinstance(error, requests.ReadTimeout)
            raise failed from error

    def send(self, mime, envelope) -> str:
        data = mime if isinstance(mime, bytes) else mime.as_bytes()
        body = base64.b64encode(with_bcc(data, list(envelope.recipients)))
        response = self._post(body)
        if response.status_code == 401:  # the token expired on the way: one fresh try
            self._bearer = self.token(True)[1]
            response = self._post(body)
        if response.status_code == 202:
            request_id = response.headers.get("request-id", "")
            return f"202 Accepted by Microsoft Graph {request_id}".strip()
        raise _error(response)


def _error(response: requests.Response) -> Exception:
    status = response.status_code
    try:
        error = response.json().get("error") or {}
        code, message = str(error.get("code", ""))[:100], str(error.get("message", ""))[:300]
    except (ValueError, AttributeError):
        code, message = "", ""
    reply = f"{status} {code} {message}".strip()
    if status in (429, 503, 504) or (status >= 500 and code == "ErrorServerBusy"):
        seconds = _retry_after(response)
        return TransientSendError(
            reply, explanation="throttled", params={"retry_after": seconds} if seconds else None
        )
    if code in _ERRORS:
        key, transient = _ERRORS[code]
        return (TransientSendError if transient else PermanentSendError)(reply, explanation=key)
    if status == 401:
        return PermanentSendError(reply, explanation="m365_graph_consent")
    if status >= 500:
        return TransientSendError(reply, explanation="temporary_failure")
    return PermanentSendError(reply, explanation="rejected")
