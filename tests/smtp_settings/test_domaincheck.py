"""The domain check (issue 14, item 1) against a real DNS server on loopback (dns_fixtures).

Each zone is a case the card must tell apart; the verdict is what a receiver would do with
mail From that domain sent through the platform's IPs. An attacker's goals tried here: make
the platform send DNS queries without end (a long include chain), to somewhere else than
DNS_NAMESERVERS, or crash the check with a crafted name.
"""

from __future__ import annotations

import time

import pytest

from smtp_settings.domaincheck import (
    DomainError,
    check_domain,
    domain_of,
    suggested_spf,
    verdict_lines,
)
from tests.dns_fixtures import PLATFORM_INCLUDE, PLATFORM_IP, SLOW_SECONDS, free_udp_port

pytestmark = pytest.mark.usefixtures("platform_dns")


def test_spf_including_the_platform_passes_and_the_platform_may_send():
    verdict = check_domain("anna@includes.test")
    assert verdict.spf == "pass"
    assert verdict.dmarc_policy == "reject"
    assert verdict.platform_may_send
    assert verdict.recommendation == "default"
    assert verdict.suggested_spf is None
    assert verdict.mx == ["mx.includes.test"]
    assert verdict.mx_provider == "other"
    assert "may send as you" in verdict.headline


def test_dmarc_reject_without_the_platform_in_spf_recommends_reply_to_and_the_record():
    verdict = check_domain("rejects.test")
    assert verdict.mx_provider == "google"
    assert verdict.spf == "softfail"
    assert verdict.spf_record == "v=spf1 include:_spf.google.com ~all"
    assert verdict.dmarc_policy == "reject"
    assert not verdict.platform_may_send
    assert verdict.recommendation == "reply_to"
    assert verdict.suggested_spf == (
        f"v=spf1 include:_spf.google.com include:{PLATFORM_INCLUDE} ~all"
    )
    assert "policy reject" in verdict.headline
    assert "Directo-Reply-to" in verdict.headline


def test_a_subdomain_takes_the_parents_subdomain_policy():
    verdict = check_domain("team@sub.rejects.test")
    assert verdict.dmarc_policy == "quarantine"
    assert verdict.dmarc_domain == "rejects.test"
    assert verdict.recommendation == "reply_to"


def test_dmarc_none_is_delivered_unauthenticated_with_a_suggestion():
    verdict = check_domain("monitors.test")
    assert verdict.mx_provider == "microsoft365"
    assert verdict.spf == "fail"  # -all without the platform
    assert verdict.dmarc_policy == "none"
    # A hard SPF fail is refused by receivers even when DMARC only monitors.
    assert verdict.recommendation == "reply_to"
    assert verdict.suggested_spf == (
        f"v=spf1 include:spf.protection.outlook.com include:{PLATFORM_INCLUDE} -all"
    )


def test_no_records_at_all():
    verdict = check_domain("bare.test")
    assert verdict.spf == "none"
    assert verdict.dmarc_policy is None
    assert verdict.mx_provider is None
    assert verdict.platform_may_send
    assert verdict.recommendation == "default"
    assert verdict.suggested_spf == f"v=spf1 include:{PLATFORM_INCLUDE} ~all"
    assert "not authenticated" in verdict.headline


def test_an_include_chain_past_the_lookup_limit_is_a_permerror_and_stops(platform_dns):
    before = len(platform_dns.zones.queries)  # the session's server: other tests ask too
    verdict = check_domain("loop.test", use_cache=False)
    assert verdict.spf == "permerror"
    assert "lookup" in verdict.spf_detail.lower()
    # RFC 7208 4.6.4: at most 10 lookups; the chain has 15 links and is never walked to its end.
    links = {f"l{n}.loop.test" for n in range(1, 16)}
    asked = [name for name, _type in platform_dns.zones.queries[before:] if name in links]
    assert len(asked) <= 10
    assert "l11.loop.test" not in asked
    assert verdict.platform_may_send  # no DMARC: delivered, not authenticated
    assert verdict.recommendation == "default"


def test_a_hard_fail_recommends_reply_to_even_without_dmarc():
    verdict = check_domain("hardfail.test")
    assert verdict.spf == "fail"
    assert verdict.dmarc_policy is None
    assert verdict.recommendation == "reply_to"
    assert verdict.suggested_spf == f"v=spf1 include:{PLATFORM_INCLUDE} -all"


def test_a_failing_name_server_decides_nothing():
    verdict = check_domain("servfail.test")
    assert verdict.dns_failed
    assert verdict.spf == "temperror"
    assert verdict.recommendation == "default"
    assert "could not be checked" in verdict.headline


def test_no_dns_at_all_decides_nothing(settings):
    settings.DNS_NAMESERVERS = [f"127.0.0.1:{free_udp_port()}"]  # nobody listens there
    settings.DNS_TIMEOUT = 0.5
    verdict = check_domain("rejects.test", use_cache=False)
    assert verdict.dns_failed
    assert verdict.recommendation == "default"


def test_a_verdict_is_cached(platform_dns):
    check_domain("includes.test")
    before = platform_dns.count()
    again = check_domain("INCLUDES.test.")
    assert again.spf == "pass"
    assert platform_dns.count() == before


def test_every_query_goes_to_the_configured_server_only(platform_dns):
    """pyspf's own DNS function would ask the system's resolver: ours replaces it, so the
    includes are resolved by DNS_NAMESERVERS (the test server saw them)."""
    before = platform_dns.count("_spf.platform.test")
    check_domain("includes.test", use_cache=False)
    assert platform_dns.count("_spf.platform.test") > before


def test_without_platform_ips_spf_is_unknown_and_nothing_changes(settings):
    settings.PLATFORM_SENDING_IPS = []
    settings.PLATFORM_SPF_INCLUDE = ""
    verdict = check_domain("rejects.test", use_cache=False)
    assert verdict.spf is None
    assert verdict.recommendation == "default"
    assert "PLATFORM_SENDING_IPS" in verdict.headline


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "anna@",
        "no-dot",
        "a b.test",
        "x" * 300 + ".test",
        "-bad-.test",
        "a..b.test",
        "[127.0.0.1]",
        "anna@[127.0.0.1]",
        "exa\u0000mple.test",
    ],
)
def test_what_is_not_a_domain_is_refused_with_a_message(value):
    with pytest.raises(DomainError) as refused:
        domain_of(value)
    assert str(refused.value)


def test_international_domains_are_looked_up_in_their_ascii_form():
    assert domain_of("Zoë@Bücher.TEST") == "xn--bcher-kva.test"


def test_the_suggestion_keeps_the_record_and_adds_the_platform_before_all(settings):
    settings.PLATFORM_SPF_INCLUDE = ""
    settings.PLATFORM_SENDING_IPS = ["203.0.113.10", "2001:db8::25"]
    assert suggested_spf("v=spf1 mx ?all", None) == (
        "v=spf1 mx ip4:203.0.113.10 ip6:2001:db8::25 ?all"
    )
    assert suggested_spf("v=spf1 a redirect=_spf.example.test", None) == (
        "v=spf1 a ip4:203.0.113.10 ip6:2001:db8::25 redirect=_spf.example.test"
    )
    assert suggested_spf("v=spf1 ip4:203.0.113.10 -all", None) == (
        "v=spf1 ip4:203.0.113.10 ip6:2001:db8::25 -all"
    )


# -- what an abuser's DNS can do (issue 14's attacker review) ----------------------------------
def test_a_slow_domain_cannot_hold_the_check_past_its_budget(settings):
    """deep.test's four includes each answer after 0.4 s: the whole check has DNS_TIMEOUT."""
    settings.DNS_TIMEOUT = 1.0
    started = time.monotonic()
    verdict = check_domain("deep.test", use_cache=False)
    assert time.monotonic() - started < 1.0 + 2 * SLOW_SECONDS
    assert verdict.spf == "temperror"
    assert verdict.dns_failed
    assert verdict.recommendation == "default"


def test_the_dmarc_walk_asks_at_most_eight_names(platform_dns):
    name = ".".join(f"x{n}" for n in range(30)) + ".bare.test"
    before = [q for q in platform_dns.zones.queries if q[0].startswith("_dmarc.")]
    check_domain(f"a@{name}", use_cache=False)
    after = [q for q in platform_dns.zones.queries if q[0].startswith("_dmarc.")]
    assert 1 <= len(after) - len(before) <= 8


def test_each_question_is_asked_once_per_check_whatever_the_number_of_ips(settings, platform_dns):
    settings.PLATFORM_SENDING_IPS = [PLATFORM_IP, "203.0.113.11", "198.51.100.1"]
    before = platform_dns.count("_spf.platform.test")
    verdict = check_domain("includes.test", use_cache=False)
    assert verdict.spf == "fail"  # 198.51.100.1 is not in the platform's record
    assert platform_dns.count("_spf.platform.test") - before == 1


def test_two_spf_records_are_a_permerror_without_a_suggestion():
    verdict = check_domain("twospf.test")
    assert verdict.spf == "permerror"
    assert verdict.spf_records == 2
    assert verdict.spf_record is None
    assert verdict.suggested_spf is None


def test_dns_text_loses_its_control_characters_before_anyone_sees_it():
    verdict = check_domain("ctrl.test")
    text = "\n".join(verdict_lines(verdict)) + str(verdict.as_json())
    assert "\x1b" not in text and "\x07" not in text
    assert "pwned" in (verdict.spf_record or "")


def test_no_query_bypasses_the_configured_resolver(monkeypatch, platform_dns):
    """pyspf's own dnspython function and dnspython's system resolver are never used."""
    import dns.resolver
    import spf

    def refuse(*args, **kwargs):
        raise AssertionError("a lookup bypassed DNS_NAMESERVERS")

    monkeypatch.setattr(spf, "DNSLookup_dnspython", refuse, raising=False)
    monkeypatch.setattr(dns.resolver, "get_default_resolver", refuse)
    monkeypatch.setattr(dns.resolver, "resolve", refuse)
    assert check_domain("rejects.test", use_cache=False).spf == "softfail"


def test_the_domain_is_the_one_mail_from_carries():
    """IDNA 2003 as outbox.message writes MAIL FROM: "faß" is "fass" there and here."""
    from outbox.message import ascii_domain

    assert domain_of("jan@faß.test") == ascii_domain("jan@faß.test").partition("@")[2]


def test_too_many_lookups_in_the_record_itself_suggests_addresses_not_an_include(settings):
    record = "v=spf1 " + " ".join(f"include:i{n}.example.test" for n in range(10)) + " -all"
    settings.PLATFORM_SENDING_IPS = ["203.0.113.10"]
    suggestion = suggested_spf(record, None)
    assert f"include:{PLATFORM_INCLUDE}" not in suggestion
    assert "ip4:203.0.113.10 -all" in suggestion
