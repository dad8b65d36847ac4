"""A real DNS server on 127.0.0.1 for the domain check (issue 14): dnslib's server with the
zones below, answering over UDP as any resolver's upstream would. It counts the queries it
gets, so tests can tell a cached verdict from a new lookup.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest
from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer

PLATFORM_IP = "203.0.113.10"
PLATFORM_INCLUDE = "_spf.platform.test"
SLOW_SECONDS = 0.4
DEEP_SPF = "v=spf1 " + " ".join(f"include:{n}.slow.test" for n in "abcd") + " -all"

# One zone file for every case the card must tell apart.
ZONES = (
    f"""
$TTL 300
_spf.platform.test.        TXT "v=spf1 ip4:{PLATFORM_IP} ip4:203.0.113.11 -all"

; SPF includes the platform; DMARC reject: the platform may send as its users.
includes.test.             MX  10 mx.includes.test.
includes.test.             TXT "v=spf1 mx include:{PLATFORM_INCLUDE} -all"
_dmarc.includes.test.      TXT "v=DMARC1; p=reject; rua=mailto:dmarc@includes.test"
mx.includes.test.          A   198.51.100.25

; Google Workspace, SPF without the platform, DMARC reject (and quarantine for subdomains).
rejects.test.              MX  1 aspmx.l.google.com.
rejects.test.              MX  5 alt1.aspmx.l.google.com.
rejects.test.              TXT "google-site-verification=abc"
rejects.test.              TXT "v=spf1 include:_spf.google.com ~all"
_dmarc.rejects.test.       TXT "v=DMARC1; p=reject; sp=quarantine"
_spf.google.com.           TXT "v=spf1 ip4:192.0.2.0/24 ~all"
sub.rejects.test.          TXT "v=spf1 include:_spf.google.com ~all"

; Microsoft 365, SPF without the platform, DMARC monitoring only.
monitors.test.             MX  0 monitors-test.mail.protection.outlook.com.
monitors.test.             TXT "v=spf1 include:spf.protection.outlook.com -all"
_dmarc.monitors.test.      TXT "v=DMARC1; p=none"
spf.protection.outlook.com. TXT "v=spf1 ip4:192.0.2.128/25 -all"

; No MX, no SPF, no DMARC: a name that exists and nothing more.
bare.test.                 A   198.51.100.7

; SPF includes in a chain longer than RFC 7208's ten lookups.
loop.test.                 TXT "v=spf1 include:l1.loop.test -all"
"""
    + "\n".join(
        f'l{n}.loop.test.              TXT "v=spf1 include:l{n + 1}.loop.test -all"'
        for n in range(1, 15)
    )
    + f"""

; A hard fail without DMARC: receivers refuse it all the same.
hardfail.test.             TXT "v=spf1 -all"

; Text its owner chose, shown on a card that staff may open: it must stay text.
xss.test.                  TXT "v=spf1 a:<img/src=x/onerror=alert(1)> -all"
_dmarc.xss.test.           TXT "v=DMARC1; p=reject; ruf=<script>alert(2)</script>"

; Two SPF records: a permerror (RFC 7208 4.5), and no suggestion beside them.
twospf.test.               TXT "v=spf1 mx -all"
twospf.test.               TXT "v=spf1 include:_spf.google.com ~all"

; An SPF record whose includes answer slowly (slow.test waits before every answer).
deep.test.                 TXT "{DEEP_SPF}"

; A domain whose name server fails (SERVFAIL on every question under it).
servfail.test.             A   198.51.100.9
"""
)


class Zones(BaseResolver):
    """Answers from the zone text: NOERROR without answers for a name that exists with other
    types, NXDOMAIN for a name that does not, SERVFAIL under servfail.test."""

    def __init__(self, text: str) -> None:
        self.records = [(rr.rname, QTYPE[rr.rtype], rr) for rr in RR.fromZone(text)]
        # A record a zone file cannot spell: an escape sequence for a staff member's terminal.
        ctrl = RR("ctrl.test", QTYPE.TXT, rdata=TXT("v=spf1 a:\x1b[2J\x1b]0;pwned\x07x.test -all"))
        self.records.append((ctrl.rname, "TXT", ctrl))
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def resolve(self, request, handler):
        reply = request.reply()
        qname, qtype = request.q.qname, QTYPE[request.q.qtype]
        with self.lock:
            self.queries.append((str(qname).rstrip(".").lower(), qtype))
        if qname.matchSuffix("servfail.test"):
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if qname.matchSuffix("slow.test"):
            time.sleep(SLOW_SECONDS)
            reply.add_answer(RR(qname, QTYPE.TXT, rdata=TXT("v=spf1 -all")))
            return reply
        known = False
        for name, rtype, rr in self.records:
            if qname == name:
                known = True
                if rtype == qtype or rtype == "CNAME":
                    reply.add_answer(rr)
        if not known:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@dataclass
class DnsServer:
    address: str
    zones: Zones
    server: DNSServer = field(repr=False)

    def count(self, name: str | None = None) -> int:
        with self.zones.lock:
            return sum(1 for q, _t in self.zones.queries if name is None or q.endswith(name))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def dns_server():
    """The session's DNS server, on the port tests.session_keys put in DNS_NAMESERVERS (so
    the settings of the session and of every subprocess point at it)."""
    zones = Zones(ZONES)
    port = int(os.environ["DNS_NAMESERVERS"].rpartition(":")[2])
    quiet = DNSLogger(logf=lambda _line: None)
    server = DNSServer(zones, address="127.0.0.1", port=port, logger=quiet)
    server.start_thread()
    try:
        yield DnsServer(address=f"127.0.0.1:{port}", zones=zones, server=server)
    finally:
        server.stop()
        server.server.server_close()


@pytest.fixture
def platform_dns(settings, dns_server):
    """Settings pointing the domain check at the test DNS server, a cleared cache."""
    from django.core.cache import cache

    settings.DNS_NAMESERVERS = [dns_server.address]
    settings.DNS_TIMEOUT = 2.0
    settings.PLATFORM_SENDING_IPS = [PLATFORM_IP]
    settings.PLATFORM_SPF_INCLUDE = PLATFORM_INCLUDE
    cache.clear()
    yield dns_server
    cache.clear()
