"""Attacks found reviewing issue 11 (a second attacker's pass over the merged change).

- **Take the intake's memory with short lines.** The intake's bound was shown for one shape,
  a DSN of 60,000 recipient blocks. The email package holds every line of a header block or a
  body as its own object until the block ends, so a 10 MB mail of short lines costs 25-30 times
  its size whatever the recipient limit: a body of empty lines, 1.3 million headers, one
  X-Failed-Recipients header folded over 400,000 addresses (which flufl.bounce's Exim detector
  and the VERP candidates also read whole). Each is piped to the real `ingest_bounce`: its peak
  RSS (VmHWM) against the bound of test_attacks_bounces. The control: the same mails through
  the same command with the parse window lifted go past the bound.
- **Forge what the key signs.** The app refused an empty or a django-insecure- key, but
  started on `DJANGO_SECRET_KEY=changeme`: a key anyone guesses signs the VERP addresses (a
  forged bounce), the card e-mail's verification link (a From address never verified) and the
  session cookies' hashes. Counted: the guessable keys `manage.py check` starts on, with DEBUG
  off and on (Django's own measure: fewer than 50 characters or 5 different ones). The control:
  a key of `make .env`'s kind starts.
- **Spray logins and lock the administrator out from one IPv6 /64.** Each address of a /64
  was an address of its own to the throttle: one try at each user, an address a try, passed
  the address limit; the administrator's wrong passwords, an address each, filled his own
  counter and locked him out (and tries refused by a lockout were counted too). Counted: the
  goals reached. The control: another /64 and an IPv4 address still log in.
- **Hold the bounce listener with NOOPs.** aiosmtpd's timeout restarts at every command: a
  peer sending NOOP now and then held its places for ever, and a few peers held them all, so
  every real bounce was answered 421. Here the one place is held by NOOPs for twice the
  session limit (shortened for the test): the seconds a real bounce server was still refused
  past it. The control: without the limit, the held place stays held.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from bounces import listener
from bounces.listener import BounceController, ConnectionLimiter
from bounces.models import InboundMail
from tests import factories
from tests.reliability.test_attacks_bounces import (
    _MEASURED,
    CONCURRENT_DSNS,
    DOMAIN,
    GROWTH_BOUND_MB,
    HUGE_BYTES,
    RSS_BOUND_MB,
    UNBOUNDED_PARSE,
    _bounce_server_run,
    _env,
    _peak_mb,
)
from tests.reliability.test_attacks_defaults import _keys, _log_in, _manage
from tests.smtp_fixtures import HOST, free_port


@pytest.fixture(autouse=True)
def _event_domain(settings):
    settings.EVENT_MAIL_DOMAIN = DOMAIN


def _fill(head: bytes, line: bytes, tail: bytes = b"") -> bytes:
    count = (HUGE_BYTES - len(head) - len(tail) - 100) // len(line)
    return head + line * count + tail


def _distinct_addresses_header() -> bytes:
    head = b"From: MAILER-DAEMON@mx.test\r\nSubject: Mail delivery failed\r\nX-Failed-Recipients: "
    lines, size, n = [], len(head), 0
    while size < HUGE_BYTES - 200:
        line = b"user%d@kowalski.example,\r\n " % n
        lines.append(line)
        size, n = size + len(line), n + 1
    return head + b"".join(lines) + b"last@kowalski.example\r\n\r\nx\r\n"


SHAPES = {
    "a body of empty lines": lambda: _fill(
        b"From: MAILER-DAEMON@mx.test\r\nContent-Type: text/plain\r\n\r\n", b"\r\n"
    ),
    "1.3 million headers": lambda: _fill(
        b"From: MAILER-DAEMON@mx.test\r\n", b"X-A: b\r\n", b"\r\nx\r\n"
    ),
    "a header of 400,000 addresses": _distinct_addresses_header,
}

# manage.py with the parse window lifted: the intake as it was before this review.
_UNBOUNDED = UNBOUNDED_PARSE + _MEASURED


def _ingest_peak_mb(raw: bytes, *, unbounded: bool = False) -> float:
    peak_file = Path(tempfile.mkdtemp()) / "peak"
    process = subprocess.Popen(
        [sys.executable, "-c", _UNBOUNDED if unbounded else _MEASURED, "ingest_bounce",
         f"--recipient=bounces@{DOMAIN}"],
        cwd=django_settings.BASE_DIR,
        env={**_env(), "PEAK_RSS_FILE": str(peak_file)},
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    process.communicate(raw, timeout=300)
    assert process.returncode == 0
    return _peak_mb(peak_file)


@pytest.mark.django_db(transaction=True)
def test_intake_memory_on_mails_of_short_lines(figures):
    peaks = {}
    for name, build in SHAPES.items():
        raw = build()
        assert 10_000_000 < len(raw) <= HUGE_BYTES
        peaks[name] = _ingest_peak_mb(raw)
        del raw
    assert InboundMail.objects.count() == len(SHAPES)  # each kept, for an administrator
    shapes = list(SHAPES.values())
    server = _bounce_server_run(mails=lambda n: shapes[n % len(shapes)]())
    growth = server["peak"] - server["idle"]
    past = sum(max(0.0, peak - RSS_BOUND_MB) for peak in peaks.values())
    past += max(0.0, growth - GROWTH_BOUND_MB)
    figures.add(
        "attacks",
        f"intake memory past its bound on 10 MB mails of short lines ({', '.join(SHAPES)}; "
        f"ingest_bounce ≤ {RSS_BOUND_MB} MB, bounce_server {CONCURRENT_DSNS} at once "
        f"≤ {GROWTH_BOUND_MB} MB over idle), MB",
        round(past),
        "= 0",
    )
    for name, peak in peaks.items():
        figures.add("attacks", f"intake peak RSS, 10 MB of short lines: {name}, MB", round(peak),
                    f"≤ {RSS_BOUND_MB}")  # fmt: skip
    figures.add(
        "attacks",
        f"bounce_server RSS growth, {CONCURRENT_DSNS} mails of short lines at once "
        f"(idle {server['idle']:.0f}, peak {server['peak']:.0f}), MB",
        round(growth),
        f"≤ {GROWTH_BOUND_MB}",
    )
    assert round(past) == 0, (peaks, server)


@pytest.mark.django_db(transaction=True)
def test_the_memory_detector_sees_the_whole_mail_parsed():
    """The control: the same command reading the whole mail goes past the bound."""
    peak = _ingest_peak_mb(SHAPES["a body of empty lines"](), unbounded=True)

    assert peak > RSS_BOUND_MB, peak


# -- guessable keys ----------------------------------------------------------------------------
GUESSABLE_KEYS = ("changeme", "secret", "directo_mail", "x" * 64, "abcd" * 20)


def test_the_app_does_not_start_on_a_guessable_key(figures):
    started = []
    for debug in ("false", "true"):
        for key in GUESSABLE_KEYS:
            result = _manage(
                "check", **{**_keys(), "DJANGO_SECRET_KEY": key, "DJANGO_DEBUG": debug}
            )
            if result.returncode == 0:
                started.append(f"DEBUG={debug}: {key}")
            else:
                assert "DJANGO_SECRET_KEY" in result.stderr, result.stderr
    figures.add("attacks", "app starts on a guessable DJANGO_SECRET_KEY", len(started), "= 0")
    assert not started, started

    # Control: a key of `make .env`'s kind starts.
    assert _manage("check", **_keys()).returncode == 0


# -- one IPv6 /64, many addresses --------------------------------------------------------------
def _in_64(index: int, prefix: str = "2001:db8:1:2") -> str:
    return f"{prefix}:{index >> 16 & 0xFFFF:x}:{index & 0xFFFF:x}:0:1"


@pytest.mark.django_db
def test_one_ipv6_network_counts_as_one_address(settings, figures, caplog):
    caplog.set_level(logging.CRITICAL, logger="axes")
    caplog.set_level(logging.CRITICAL, logger="django.request")
    right = factories.LOGIN_PASSWORD
    per_address = settings.LOGIN_FAILURES_PER_ADDRESS
    succeeded: list[str] = []

    # 1. Spray: one try at each user, each from a new address of one /64, then a right one.
    victims = [factories.user(f"V{index}") for index in range(per_address + 1)]
    for index, victim in enumerate(victims[:-1]):
        _log_in(victim.code, "wrong-" + secrets.token_hex(4), _in_64(index))
    if _log_in(victims[-1].code, right, _in_64(9999))[1]:
        succeeded.append("a /64 spraying users got a login past the address limit")

    # 2. Lock the administrator out from one /64: his wrong passwords, an address each.
    factories.user("ROOT", is_staff=True, is_superuser=True)
    for index in range(3 * settings.LOGIN_FAILURES_PER_USER):
        _log_in("ROOT", "wrong-" + secrets.token_hex(4), _in_64(index, "2001:db8:6:6"))
    if not _log_in("ROOT", right, "2001:db8:7:7::1")[1]:
        succeeded.append("a /64 locked the administrator out")

    figures.add("attacks", "goals reached from one IPv6 /64 (login spray, admin lockout)",
                len(succeeded), "= 0")  # fmt: skip
    assert not succeeded, succeeded

    # Control: other /64s are other addresses, and the IPv4 limits are unchanged.
    assert _log_in(victims[0].code, right, "2001:db8:1:3::1")[1]
    assert _log_in(victims[1].code, right, "192.0.2.1")[1]


# -- a place in the bounce listener held by NOOPs ------------------------------------------------
def _refused_past_the_limit(limit: float) -> int:
    """One place (per peer and in all), held by NOOPs in a thread; from `limit` + 1 s to
    `limit` + 3 s a newcomer knocks every 0.2 s: how many times it was turned away."""
    controller = BounceController(
        hostname=HOST, port=free_port(), limiter=ConnectionLimiter(per_peer=1, total=1)
    )
    controller.start()
    stop = threading.Event()

    def hold() -> None:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            holder = smtplib.SMTP(HOST, controller.port, timeout=5)
            while not stop.wait(0.2):
                holder.noop()

    holder = threading.Thread(target=hold)
    try:
        holder.start()
        time.sleep(limit + 1)
        refused = 0
        for _ in range(10):
            try:
                with smtplib.SMTP(HOST, controller.port, timeout=5) as newcomer:
                    newcomer.noop()
            except (smtplib.SMTPException, OSError):
                refused += 1
            time.sleep(0.2)
        return refused
    finally:
        stop.set()
        holder.join()
        controller.stop()


def test_a_place_in_the_bounce_listener_is_not_held_for_ever(monkeypatch, figures):
    limit = 2.0
    monkeypatch.setattr(listener, "MAX_SESSION_SECONDS", limit, raising=False)
    refused = _refused_past_the_limit(limit)
    figures.add("attacks", "bounce_server: bounces turned away while a peer held the place "
                "with NOOPs past the session limit (of 10)", refused, "= 0")  # fmt: skip
    assert refused == 0


def test_the_hold_detector_sees_a_listener_without_a_session_limit(monkeypatch):
    monkeypatch.setattr(listener, "MAX_SESSION_SECONDS", 3600)
    assert _refused_past_the_limit(2.0) == 10
