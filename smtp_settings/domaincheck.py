"""The domain check (issue 14, item 1): may the platform send From the card e-mail's domain?

Mail in Default mode leaves through the platform's relay with the card e-mail as From and as
envelope sender, so a receiver checks the user's domain: SPF (RFC 7208) for the platform's
sending IPs (`PLATFORM_SENDING_IPS`), then DMARC (RFC 7489), which passes only when SPF passes
for that same domain (the platform signs no DKIM for it). The verdict says what happens to such
mail and what to do:
- SPF pass: the platform may send as the user.
- no pass, DMARC `p=reject` or `quarantine`: the mail would be refused or junked; it goes out
  Reply-To style instead (resolve.py), and the card shows the SPF record to paste.
- SPF `fail` (`-all` without the platform): receivers refuse it even without DMARC; same.
- otherwise (no SPF, `~all`, `?all`, a broken record, DMARC `p=none`): it is delivered but not
  authenticated; the card suggests the record.
A DNS failure (`temperror`) decides nothing: the last known verdict stands.

SPF is evaluated by pyspf (the RFC 7208 reference implementation in Python, include/redirect,
macros, the 10-lookup limit), with its DNS lookups sent through dnspython to `DNS_NAMESERVERS`.
Nothing here sends anything to the domain's servers: only DNS queries, to `DNS_NAMESERVERS`,
and a whole check has one budget (`DNS_TIMEOUT` seconds, every lookup within it; answers are
reused within a check; at most 8 DMARC lookups): a domain whose owner makes its DNS slow or
deep cannot hold a web worker longer. Everything kept from DNS is cut short and stripped of
control characters: a TXT record is whatever the domain's owner wrote.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from dataclasses import asdict, dataclass, field

import dns.exception
import dns.name
import dns.nameserver
import dns.resolver
import spf
from django.conf import settings
from django.core.cache import cache
from django.utils.translation import gettext_lazy as _

from . import providers

SPF_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")
POLICIES = ("reject", "quarantine", "none")
_SHOWN = 1000  # characters of a DNS record kept and shown (a TXT record may be 64 KB)
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


class DomainError(ValueError):
    """Not a domain or e-mail address we can look up."""


@dataclass(frozen=True)
class DomainVerdict:
    domain: str
    mx: list[str] = field(default_factory=list)
    mx_provider: str | None = None  # google, microsoft365, other; None: no MX or no answer
    spf: str | None = None  # RFC 7208 result for the platform's IPs; None: no IPs configured
    spf_record: str | None = None
    spf_records: int = 0  # SPF records found: two or more are a permerror (RFC 7208 4.5)
    spf_detail: str = ""
    dmarc_policy: str | None = None  # reject, quarantine, none; None: no DMARC record
    dmarc_record: str | None = None
    dmarc_domain: str | None = None  # where the record was found (the domain or a parent)
    platform_may_send: bool = True
    recommendation: str = "default"  # default | reply_to
    suggested_spf: str | None = None  # the exact record to publish, when it should change
    dns_failed: bool = False
    ips: list[str] = field(default_factory=list)  # the platform's IPs it was checked for

    @property
    def rejects_platform(self) -> bool:
        """Default mode must not send From this domain through the platform."""
        return self.recommendation == "reply_to"

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> DomainVerdict:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)

    @property
    def headline(self) -> str:
        if self.dns_failed:
            return str(
                _("The domain %(domain)s could not be checked now (DNS did not answer).")
                % {"domain": self.domain}
            )
        if self.spf is None:
            return str(
                _(
                    "The platform's sending addresses are not configured "
                    "(PLATFORM_SENDING_IPS), so SPF for %(domain)s cannot be checked."
                )
                % {"domain": self.domain}
            )
        if self.platform_may_send and self.spf == "pass":
            return str(
                _("The platform may send as you: %(domain)s allows it.") % {"domain": self.domain}
            )
        if self.rejects_platform:
            return str(
                _(
                    "Mail From %(domain)s through the platform fails SPF/DMARC (%(why)s): "
                    "use Directo-Reply-to, or add the platform to your SPF record."
                )
                % {"domain": self.domain, "why": self.why}
            )
        return str(
            _(
                "Mail From %(domain)s through the platform is delivered but not authenticated "
                "(%(why)s): add the platform to your SPF record."
            )
            % {"domain": self.domain, "why": self.why}
        )

    @property
    def why(self) -> str:
        policy = (
            _("DMARC policy %(policy)s") % {"policy": self.dmarc_policy}
            if self.dmarc_policy
            else _("no DMARC policy")
        )
        return f"SPF {self.spf}, {policy}"


def domain_of(value: str) -> str:
    """The domain of an e-mail address or a domain name, lower case, IDNA-encoded."""
    text = (value or "").strip().rstrip(".")
    if "@" in text:
        text = text.rpartition("@")[2]
    if not text or any(c.isspace() for c in text) or len(text) > 253:
        raise DomainError(_("Enter an e-mail address or a domain name."))
    try:
        # IDNA 2003, as outbox.message.ascii_domain writes MAIL FROM ("faß.de" → "fass.de"):
        # the verdict is for the domain receivers check.
        name = dns.name.from_unicode(text, idna_codec=dns.name.IDNA_2003)
        domain = name.to_text(omit_final_dot=True).lower()
    except (dns.exception.DNSException, UnicodeError, ValueError):
        raise DomainError(_("%(value)s is not a domain name.") % {"value": text}) from None
    if not _DOMAIN.match(domain):
        raise DomainError(_("%(value)s is not a domain name.") % {"value": text})
    return domain


def resolver() -> dns.resolver.Resolver:
    """DNS_NAMESERVERS (host[:port], comma-separated; [v6]:port) or the system's resolver."""
    configured = getattr(settings, "DNS_NAMESERVERS", [])
    if not configured:
        found = dns.resolver.Resolver()
    else:
        found = dns.resolver.Resolver(configure=False)
        found.nameservers = [dns.nameserver.Do53Nameserver(*_host_port(s)) for s in configured]
    found.lifetime = float(getattr(settings, "DNS_TIMEOUT", 5.0))
    found.timeout = min(found.lifetime, 2.0)
    return found


def _host_port(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, "53"
    ipaddress.ip_address(host)  # a name server is given by address
    return host, int(port)


class _Lookups:
    """DNS for one check, through one resolver, within one deadline, each question asked once
    (pyspf asks the same ones again for every platform IP)."""

    def __init__(self) -> None:
        self.resolver = resolver()
        self.deadline = time.monotonic() + float(getattr(settings, "DNS_TIMEOUT", 5.0))
        self.seen: dict[tuple[str, str], list] = {}

    def answers(self, name: str, rdtype: str) -> list:
        key = (str(name).lower(), rdtype)
        if key not in self.seen:
            self.seen[key] = self._ask(str(name), rdtype)
        return self.seen[key]

    def _ask(self, name: str, rdtype: str) -> list:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise spf.TempError("DNS: the check took too long")
        try:
            return list(self.resolver.resolve(name, rdtype, search=False, lifetime=left))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as error:
            raise spf.TempError(f"DNS {type(error).__name__}") from None

    def txt(self, name: str) -> list[str]:
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self.answers(name, "TXT")]

    def for_spf(self, name, qtype, strict=True, timeout=None):
        """pyspf's DNSLookup: [((name, qtype), value)] in its shapes."""
        found = []
        for rdata in self.answers(name, qtype):
            if qtype in ("A", "AAAA"):
                found.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                found.append(((name, qtype), (rdata.preference, rdata.exchange.to_text(True))))
            elif qtype == "PTR":
                found.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                found.append(((name, qtype), list(rdata.strings)))
            elif qtype == "CNAME":
                found.append(((name, qtype), rdata.target.to_text(True)))
        return found


def check_domain(value: str, *, use_cache: bool = True) -> DomainVerdict:
    """The verdict for an address's or a domain's domain (cached DOMAIN_CHECK_CACHE_SECONDS;
    a DNS failure only a minute)."""
    domain = domain_of(value)
    if use_cache and (cached := cached_verdict(domain)) is not None:
        return cached
    verdict = _check(domain)
    cache.set(
        _cache_key(domain),
        verdict.as_json(),
        60 if verdict.dns_failed else int(getattr(settings, "DOMAIN_CHECK_CACHE_SECONDS", 3600)),
    )
    return verdict


def cached_verdict(domain: str) -> DomainVerdict | None:
    """The verdict this process's cache holds for a domain (a failure for a minute)."""
    cached = cache.get(_cache_key(domain))
    return DomainVerdict.from_json(cached) if cached else None


def _cache_key(domain: str) -> str:
    return f"domaincheck:{domain}:{','.join(settings.PLATFORM_SENDING_IPS)}"


def _check(domain: str) -> DomainVerdict:
    lookups = _Lookups()
    ips = list(settings.PLATFORM_SENDING_IPS)
    failed = False
    try:
        hosts = mx_hosts(domain, lookups)
    except spf.TempError:
        # DNS does not answer: the rest would wait as long again for each lookup.
        return DomainVerdict(domain=domain, spf="temperror", dns_failed=True, ips=ips)
    provider = provider_of_mx(hosts)
    try:
        records = [t for t in lookups.txt(domain) if _is_spf(t)]
    except spf.TempError:
        records, failed = [], True
    spf_record = _clean(records[0], _SHOWN) if len(records) == 1 else None
    result, detail = _spf_result(domain, lookups)
    failed = failed or result == "temperror"
    policy, dmarc_record, dmarc_domain = None, None, None
    try:
        policy, dmarc_record, dmarc_domain = _dmarc(domain, lookups)
    except spf.TempError:
        failed = True
    strict = policy in ("reject", "quarantine")
    if result is None or result == "temperror":
        may_send, recommendation = True, "default"  # nothing known: nothing changes
    elif result == "pass":
        may_send, recommendation = True, "default"
    elif strict or result == "fail":
        may_send, recommendation = False, "reply_to"
    else:
        may_send, recommendation = True, "default"
    suggested = None
    # A suggestion only from a record seen whole, and never a second record next to others.
    whole = not records or (len(records) == 1 and len(records[0]) <= _SHOWN)
    if result not in (None, "pass", "temperror") and whole:
        suggested = suggested_spf(_clean(records[0], _SHOWN) if records else None, provider)
    return DomainVerdict(
        domain=domain,
        mx=hosts,
        mx_provider=provider,
        spf=result,
        spf_record=spf_record,
        spf_records=len(records),
        spf_detail=_clean(detail, 300),
        dmarc_policy=policy,
        dmarc_record=dmarc_record,
        dmarc_domain=dmarc_domain,
        platform_may_send=may_send,
        recommendation=recommendation,
        suggested_spf=suggested,
        dns_failed=failed,
        ips=ips,
    )


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _clean(text: str, limit: int) -> str:
    """DNS text as it may be kept and shown: no control characters (a terminal's escape
    sequences), at most `limit` characters."""
    return _CONTROL.sub("", text or "")[:limit]


def _is_spf(text: str) -> bool:
    return text.lower() == "v=spf1" or text[:7].lower() == "v=spf1 "


def mx_hosts(domain: str, lookups: _Lookups) -> list[str]:
    """The domain's MX hosts, most preferred first, cleaned, at most 10 (spf.TempError when
    DNS does not answer)."""
    answers = sorted(lookups.answers(domain, "MX"), key=lambda r: r.preference)
    hosts = [_clean(r.exchange.to_text(True).lower(), 255) for r in answers]
    return [host for host in hosts if host][:10]


def provider_of_mx(hosts: list[str]) -> str | None:
    """The provider (smtp_settings/providers) the first, most preferred, MX host names: its key,
    "other", or None for no MX."""
    return providers.of_mx(hosts)


def _spf_result(domain: str, lookups: _Lookups) -> tuple[str | None, str]:
    """The worst RFC 7208 result over the platform's sending IPs (any of them may send)."""
    ips = list(settings.PLATFORM_SENDING_IPS)
    if not ips:
        return None, ""
    order = {name: rank for rank, name in enumerate(_WORST_FIRST)}
    worst, detail = "pass", ""
    _current.lookups = lookups
    try:
        for ip in ips:
            result, explanation = spf.check2(i=ip, s=f"postmaster@{domain}", h=domain)
            result = result.lower()
            if result not in SPF_RESULTS:
                result = "permerror"
            if order[result] < order[worst]:
                # pyspf's own words for a broken record or a DNS failure only: a "fail"
                # explanation may come from the domain's exp= record, text its owner chose.
                shown = explanation if result in ("permerror", "temperror") else ""
                worst, detail = result, f"{ip}: {shown}" if shown else ip
    finally:
        _current.lookups = None
    return worst, detail


_WORST_FIRST = ("temperror", "permerror", "fail", "softfail", "neutral", "none", "pass")
_current = threading.local()


def _spf_dns(name, qtype, strict=True, timeout=None):
    """pyspf's DNS function (its documented hook, spf.DNSLookup): the lookups of the check
    running in this thread, so DNS_NAMESERVERS applies to SPF as to everything else."""
    lookups = getattr(_current, "lookups", None) or _Lookups()
    return lookups.for_spf(name, qtype)


spf.DNSLookup = _spf_dns


def _dmarc(domain: str, lookups: _Lookups) -> tuple[str | None, str | None, str | None]:
    """The DMARC policy for mail From `domain`: its own `_dmarc` record, else the nearest
    parent's, `sp=` for subdomains; at most 8 lookups (DMARCbis's tree walk: a name of more
    than 8 labels jumps to its last 7). Several records at one name: DMARC does not apply
    there (RFC 7489 6.6.3); a record without `p=` is not a policy."""
    labels = domain.split(".")
    names = [domain]
    start = 1 if len(labels) <= 8 else len(labels) - 7
    names += [".".join(labels[i:]) for i in range(start, len(labels) - 1)]
    for at in names[:8]:
        records = [t for t in lookups.txt(f"_dmarc.{at}") if _is_dmarc(t)]
        if len(records) > 1:
            return None, None, None
        if not records:
            continue
        tags = _tags(records[0])
        policy = tags.get("p", "").lower()
        if at != domain and tags.get("sp"):
            policy = tags["sp"].lower()
        if "p" not in tags or policy not in POLICIES:
            return None, _clean(records[0], _SHOWN), at  # a record, but no valid policy
        return policy, _clean(records[0], _SHOWN), at
    return None, None, None


def _is_dmarc(text: str) -> bool:
    first = text.split(";", 1)[0].replace(" ", "").lower()
    return first == "v=dmarc1"


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        name, _, value = part.partition("=")
        if name.strip():
            tags[name.strip().lower()] = value.strip()
    return tags


def platform_spf_mechanisms() -> list[str]:
    """What a domain adds to its SPF record for the platform: PLATFORM_SPF_INCLUDE when the
    platform publishes one, else its sending IPs."""
    include = getattr(settings, "PLATFORM_SPF_INCLUDE", "")
    if include:
        return [f"include:{include}"]
    return _ip_mechanisms()


def _lookup_terms(record: str) -> int:
    """Terms of a record that cost a DNS lookup themselves (its includes' own not counted)."""
    count = 0
    for term in record.lower().split()[1:]:
        term = term.lstrip("+-~?")
        if term in ("a", "mx", "ptr") or term.startswith(
            ("a:", "a/", "mx:", "mx/", "ptr:", "include:", "exists:", "redirect=")
        ):
            count += 1
    return count


def _ip_mechanisms() -> list[str]:
    mechanisms = []
    for ip in settings.PLATFORM_SENDING_IPS:
        kind = "ip6" if ipaddress.ip_address(ip).version == 6 else "ip4"
        mechanisms.append(f"{kind}:{ip}")
    return mechanisms


def suggested_spf(record: str | None, provider: str | None) -> str:
    """The record to publish: the current one with the platform added before its `all` (or
    redirect), or a new one with the mail provider's include when the MX says who it is."""
    platform = platform_spf_mechanisms()
    if record and _lookup_terms(record) + 1 > 10:
        # One more include would pass RFC 7208's ten lookups: a permerror for all the
        # domain's mail. The platform's addresses cost no lookup.
        platform = _ip_mechanisms()
    if record:
        terms = record.split()
        present = set(t.lower() for t in terms)
        missing = [m for m in platform if m.lower() not in present]
        for index, term in enumerate(terms):
            if term.lower().lstrip("+-~?") == "all" or term.lower().startswith("redirect="):
                return " ".join(terms[:index] + missing + terms[index:])
        return " ".join(terms + missing)
    known = providers.get(provider or "")
    provider_include = [known.spf_include] if known and known.spf_include else []
    return " ".join(["v=spf1", *provider_include, *platform, "~all"])


def verdict_lines(verdict: DomainVerdict) -> list[str]:
    """The verdict as `sender domain` prints it: the facts, then what to do."""
    none = "-"
    mx = ", ".join(verdict.mx) or none
    if verdict.mx_provider:
        mx += f"   ({verdict.mx_provider})"
    lines = [
        f"{'domain':18} {verdict.domain}",
        f"{'MX':18} {mx}",
        f"{'SPF record':18} {verdict.spf_record or none}",
        f"{'SPF for platform':18} {verdict.spf or none}"
        + (f"   ({verdict.spf_detail})" if verdict.spf_detail else ""),
        f"{'DMARC policy':18} {verdict.dmarc_policy or none}"
        + (f"   ({verdict.dmarc_domain}: {verdict.dmarc_record})" if verdict.dmarc_record else ""),
        f"{'recommendation':18} {verdict.recommendation}",
        "",
        verdict.headline,
    ]
    if verdict.suggested_spf:
        lines += [
            str(_("Publish this TXT record at %(domain)s:") % {"domain": verdict.domain}),
            f"    {verdict.suggested_spf}",
        ]
    return lines
