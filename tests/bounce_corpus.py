"""Real bounce mails with what they are known to say, read by `parse_bounce` (issue 16).

Two public corpora, vendored with their licences:
- Sisimai's set-of-emails (BSD 2-Clause, `tests/bounces/sisimai/sisimai-corpus.tar.gz`): the
  lhost-*/rhost-* bounces with what Sisimai, the reference parser, finds in each
  (`expectations.json`, from go-sisimai's publiclist tables), and its negatives: RFC 3834
  auto-replies and mails that are no bounce.
- flufl.bounce 6.0.0's sdist test data (Apache 2.0, `tests/bounces/data/`), with the
  addresses its own tests expect (`expectations.json`, see its README.md).

`measure()` runs them all and returns the figures the test asserts and the README shows;
`python -m tests.bounce_corpus` prints them with every miss (DJANGO_SETTINGS_MODULE needs no
database: parse_bounce is pure).
"""

from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
SISIMAI = HERE / "bounces" / "sisimai" / "sisimai-corpus.tar.gz"
FLUFL = HERE / "bounces" / "data"
# An addr-spec as a recipient must be: a local part and a domain with a dot or a literal.
VALID_ADDRESS = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)+"
    r"[A-Za-z0-9\-]{2,}$"
)


# Sisimai's reasons in our classes (bounces/reasons.py).
SISIMAI_REASONS = {
    "userunknown": "user_unknown",
    "mailboxfull": "mailbox_full",
    "hostunknown": "host_unknown",
    "notaccept": "host_unknown",
    "expired": "expired",
    "mesgtoobig": "message_too_big",
    "exceedlimit": "message_too_big",
    "spamdetected": "spam",
    "virusdetected": "spam",
    "contenterror": "spam",
    "blocked": "blocked",
    "badreputation": "blocked",
    "requireptr": "blocked",
    "norelaying": "blocked",
    "authfailure": "blocked",
    "notcompliantrfc": "blocked",
    "policyviolation": "blocked",
    "securityerror": "blocked",
    "failedstarttls": "blocked",
    "suspend": "suspended",
    "hasmoved": "has_moved",
    "networkerror": "network",
    "toomanyconn": "network",
    "speeding": "network",
    "systemerror": "system",
    "systemfull": "system",
    "mailererror": "system",
    "onhold": "system",
    "syntaxerror": "system",
    "rejected": "rejected",
    "filtered": "rejected",
}


@dataclass(frozen=True)
class Mail:
    corpus: str  # "sisimai" or "flufl"
    name: str
    raw: bytes
    # Bounces: one entry per expected recipient: True when it is a failure (not a delay).
    expected: tuple[bool, ...] = ()
    # Sisimai's own view, where it differs: it calls every recipient of its corpus a failure,
    # the delay notices too (reason "expired"). None: the same as `expected`.
    sisimai: tuple[bool, ...] | None = None
    addresses: tuple[str, ...] = ()  # flufl's expected addresses (Sisimai's give none)
    negative: bool = False  # an auto-reply or not a bounce: no recipient may come out
    reasons: tuple[str, ...] = ()  # Sisimai's reason per expected recipient, in our classes


@cache
def _sisimai_members() -> dict[str, bytes]:
    with tarfile.open(SISIMAI) as archive:
        return {
            member.name.split("/", 1)[1]: archive.extractfile(member).read()
            for member in archive.getmembers()
            if member.isfile() and member.name.endswith(".eml")
        }


@cache
def _sisimai_expectations() -> dict:
    with tarfile.open(SISIMAI) as archive:
        for member in archive.getmembers():
            if member.name.endswith("expectations.json"):
                return json.load(archive.extractfile(member))
    raise FileNotFoundError("expectations.json")


# A delay notice by its own word, independent of the parser: its subject says the mail is
# delayed ("Delivery Status Notification (Delay)", "Warning: message … delayed 24 hours",
# "Warning: could not send message for past 4 hours", OpenSMTPD's "…: warning"). The MTA is
# still trying: issue 16, item 1 wants a delay there, not a failure.
DELAY_SUBJECT = re.compile(rb"(?im)^Subject:[^\n]*\b(?:delay|delayed|warning)\b")


def sisimai_mails() -> Iterator[Mail]:
    members = _sisimai_members()
    expectations = _sisimai_expectations()
    for name, entry in sorted(expectations["mails"].items()):
        # Sisimai lists every recipient of its corpus as not delivered, the delay notices too
        # (reason "expired"). The expectation here: a failure, except in a delay notice.
        failure = not DELAY_SUBJECT.search(members[name])
        expected = tuple(failure for _ in entry["recipients"])
        # Sisimai finds only "delivered" or "feedback" in some (Amazon SES notifications): no
        # bounce, so no recipient may come out of them either.
        reasons = tuple(SISIMAI_REASONS.get(r["reason"], "") for r in entry["recipients"])
        yield Mail(
            "sisimai",
            name,
            members[name],
            expected=expected,
            sisimai=None if failure else tuple(True for _ in expected),
            negative=not expected,
            reasons=reasons,
        )
    for name in expectations["negatives"]:
        yield Mail("sisimai", name, members[name], negative=True)


def flufl_mails() -> Iterator[Mail]:
    """Each message its tests name addresses for, with the union of those addresses."""
    expected: dict[str, dict] = {}
    for entry in json.loads((FLUFL / "expectations.json").read_text())["expectations"]:
        mail = expected.setdefault(entry["file"], {"addresses": [], "temporary": False})
        mail["addresses"] += [a for a in entry["addresses"] if a not in mail["addresses"]]
        mail["temporary"] = mail["temporary"] or (entry["temporary"] and entry["addresses"])
    for name, entry in expected.items():
        # Where its tests expect no address, a detector is meant to find none: a bounce that
        # names no recipient, or a notice that is none. Not scored; no invalid address may
        # come out of them either.
        permanent = not entry["temporary"]
        yield Mail(
            "flufl",
            name,
            (FLUFL / name).read_bytes(),
            expected=tuple(permanent for _ in entry["addresses"]),
            addresses=tuple(entry["addresses"]),
        )


def mails() -> Iterator[Mail]:
    yield from sisimai_mails()
    yield from flufl_mails()


@dataclass
class Figures:
    bounces: int = 0
    found: int = 0  # bounces with at least one recipient found
    recipients: int = 0  # expected recipients of the bounces where one was found
    permanence_agreed: int = 0
    permanence_sisimai: int = 0  # against Sisimai's own view (every recipient failed)
    addresses_expected: int = 0  # flufl: expected addresses
    addresses_found: int = 0
    invalid: int = 0  # recipients that are no valid address
    negatives: int = 0
    unscored: int = 0
    negatives_called_bounces: int = 0
    exceptions: int = 0
    misses: list[str] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)
    invalid_seen: list[str] = field(default_factory=list)
    wrong_negatives: list[str] = field(default_factory=list)
    sources: Counter = field(default_factory=Counter)
    reasons: int = 0  # expected recipients (found) whose reason class agrees with Sisimai's
    reasons_scored: int = 0
    # Per mail: its kind and (address, permanent) of each recipient, to compare runs.
    results: dict = field(default_factory=dict)

    @property
    def found_share(self) -> float:
        return self.found / self.bounces if self.bounces else 0.0

    @property
    def reasons_share(self) -> float:
        return self.reasons / self.reasons_scored if self.reasons_scored else 0.0

    @property
    def permanence_share(self) -> float:
        return self.permanence_agreed / self.recipients if self.recipients else 0.0

    @property
    def permanence_sisimai_share(self) -> float:
        return self.permanence_sisimai / self.recipients if self.recipients else 0.0

    def table(self) -> str:
        rows = [
            ("bounces (Sisimai lhost/rhost + flufl.bounce)", f"{self.bounces}", ""),
            (
                "flufl.bounce's mails where it expects no address (not scored)",
                f"{self.unscored}",
                "",
            ),
            (
                "recipient found",
                f"{self.found} ({self.found_share:.1%})",
                "≥ 97 %",
            ),
            (
                "permanence agrees (of recipients; a delay notice's are still trying)",
                f"{self.permanence_agreed} of {self.recipients} ({self.permanence_share:.1%})",
                "≥ 98 %",
            ),
            (
                "permanence agrees with Sisimai's own view (every recipient failed)",
                f"{self.permanence_sisimai} of {self.recipients} "
                f"({self.permanence_sisimai_share:.1%})",
                "",
            ),
            (
                "flufl.bounce's expected addresses found",
                f"{self.addresses_found} of {self.addresses_expected}",
                "",
            ),
            (
                "reason class agrees with Sisimai's (of its recipients found)",
                f"{self.reasons} of {self.reasons_scored} ({self.reasons_share:.1%})",
                "",
            ),
            ("invalid addresses as recipients", f"{self.invalid}", "= 0"),
            (
                "auto-replies and non-bounces called bounces",
                f"{self.negatives_called_bounces} of {self.negatives}",
                "= 0",
            ),
            ("exceptions", f"{self.exceptions}", "= 0"),
        ]
        lines = ["| figure | value | target |", "| --- | --- | --- |"]
        lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
        return "\n".join(lines)


def measure(parse: Callable | None = None, transform: Callable[[bytes], bytes] = bytes) -> Figures:
    """Every corpus mail through `parse` (parse_bounce), after `transform` (line endings)."""
    if parse is None:
        from bounces.parse import parse_bounce as parse
    figures = Figures()
    for mail in mails():
        label = f"{mail.corpus}:{mail.name}"
        try:
            report = parse(transform(mail.raw))
        except Exception as error:  # parse_bounce promises never to raise
            figures.exceptions += 1
            figures.misses.append(f"{label}: raised {error!r}")
            continue
        if report.error:
            figures.exceptions += 1
        found = list(report.recipients)
        figures.results[label] = (
            report.kind,
            tuple(sorted((r.address.lower(), r.permanent) for r in found)),
        )
        for recipient in found:
            figures.sources[recipient.source] += 1
            if not VALID_ADDRESS.match(recipient.address):
                figures.invalid += 1
                figures.invalid_seen.append(f"{label}: {recipient.address!r}")
        if mail.negative:
            figures.negatives += 1
            if report.kind in ("bounce", "delay") or found:
                figures.negatives_called_bounces += 1
                figures.wrong_negatives.append(f"{label}: {report.kind} {found[:2]}")
            continue
        if not mail.expected:
            figures.unscored += 1
            continue
        figures.bounces += 1
        if mail.addresses:
            wanted = {a.lower() for a in mail.addresses}
            figures.addresses_expected += len(wanted)
            figures.addresses_found += len(wanted & {r.address.lower() for r in found})
        if not found:
            figures.misses.append(f"{label}: kind={report.kind} subject={report.subject!r}")
            continue
        figures.found += 1
        expected = list(mail.expected)
        figures.recipients += len(expected)
        agreed = _agreed(found, expected)
        figures.permanence_sisimai += (
            agreed if mail.sisimai is None else _agreed(found, list(mail.sisimai))
        )
        if mail.reasons:
            wanted = Counter(r for r in mail.reasons if r)
            got = Counter(r.reason for r in found)
            figures.reasons_scored += sum(wanted.values())
            figures.reasons += sum((wanted & got).values())
        figures.permanence_agreed += agreed
        if agreed < len(expected):
            figures.disagreements.append(
                f"{label}: expected {expected} got "
                f"{[(r.address, r.permanent, r.action, r.status) for r in found][:4]}"
            )
    return figures


def _agreed(found: list, expected: list[bool]) -> int:
    """How many expected recipients the found ones match in permanence (failed or still
    trying), by count: Sisimai's expectations name no address."""
    permanent = sum(r.permanent for r in found)
    agreed = min(permanent, expected.count(True)) + min(
        len(found) - permanent, expected.count(False)
    )
    return min(agreed, len(expected))


def crlf(raw: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", raw)


def cr_only(raw: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r", raw)


if __name__ == "__main__":
    import os
    import sys

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "directo_mail.settings")
    django.setup()
    result = measure()
    print(result.table())
    print("\nsources:", dict(result.sources))
    for title, items in (
        ("misses", result.misses),
        ("permanence disagreements", result.disagreements),
        ("invalid", result.invalid_seen),
        ("negatives called bounces", result.wrong_negatives),
    ):
        print(f"\n## {title} ({len(items)})")
        for item in items[: int(sys.argv[1]) if len(sys.argv) > 1 else 200]:
            print(" ", item)
