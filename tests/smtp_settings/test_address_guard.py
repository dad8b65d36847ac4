"""The private-address guard checks IPv4 inside IPv6 itself (issue 11, item 11).

Python's `ipaddress.is_global` changed between patch releases: on 3.11.7 it calls
64:ff9b::a9fe:a9fe (NAT64 of the cloud metadata address) and ::127.0.0.1 global. The guard
extracts every embedded IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) and checks it
as IPv4, on the card (an address typed as the server) and at connect time (an address a name
resolved to).
"""

from __future__ import annotations

import ipaddress

import pytest
from django.core.exceptions import ValidationError

from smtp_settings.errors import PermanentSendError
from smtp_settings.explain import explain
from smtp_settings.transports import check_resolved
from smtp_settings.validation import address_is_public, check_public_address, embedded_ipv4
from tests import factories

# (address, public?, what it carries): each embedding with a private and a public IPv4.
TABLE = [
    # plain IPv4 and IPv6
    ("8.8.8.8", True, "public IPv4"),
    ("127.0.0.1", False, "loopback"),
    ("10.1.2.3", False, "private"),
    ("169.254.169.254", False, "link-local: cloud metadata"),
    ("100.64.0.1", False, "shared address space (CGNAT)"),
    ("224.0.0.1", False, "multicast (3.11.7 calls it global)"),
    (str(ipaddress.IPv4Address(0)), False, "unspecified"),
    ("2a00:1450:4025:401::6c", True, "public IPv6"),
    ("::1", False, "IPv6 loopback"),
    ("fe80::1%eth0", False, "IPv6 link-local with a zone"),
    ("fd00::1", False, "IPv6 unique local"),
    ("ff02::1", False, "IPv6 multicast"),
    # IPv4-mapped ::ffff:0:0/96
    ("::ffff:127.0.0.1", False, "mapped loopback"),
    ("::ffff:169.254.169.254", False, "mapped metadata"),
    ("::ffff:8.8.8.8", True, "mapped public: the socket reaches 8.8.8.8"),
    # IPv4-compatible ::/96
    ("::127.0.0.1", False, "compatible loopback (3.11.7 calls it global)"),
    ("::10.0.0.1", False, "compatible private"),
    ("::a9fe:a9fe", False, "compatible metadata"),
    # NAT64 64:ff9b::/96
    ("64:ff9b::a9fe:a9fe", False, "NAT64 metadata (3.11.7 calls it global)"),
    ("64:ff9b::7f00:1", False, "NAT64 loopback"),
    ("64:ff9b::10.0.0.1", False, "NAT64 private"),
    ("64:ff9b::808:808", True, "NAT64 of 8.8.8.8: how a DNS64 network reaches it"),
    ("::8.8.8.8", False, "compatible public: deprecated, not routed"),
    # local-use NAT64 64:ff9b:1::/48 (RFC 8215): /48 layout and /96 layout
    ("64:ff9b:1:7f00:0:100::", False, "local NAT64 /48 of 127.0.0.1"),
    ("64:ff9b:1::a9fe:a9fe", False, "local NAT64 /96 of the metadata address"),
    # 6to4 2002::/16
    ("2002:7f00:1::1", False, "6to4 of 127.0.0.1 (3.11.7 calls it global)"),
    ("2002:a9fe:a9fe::1", False, "6to4 of the metadata address"),
    ("2002:c0a8:101::1", False, "6to4 of 192.168.1.1"),
    # Teredo 2001::/32: server in bits 32-63, client XOR 0xffffffff in the last 32 bits
    ("2001:0:7f00:1:0:0:f7f7:f7f7", False, "Teredo, server 127.0.0.1, client 8.8.8.8"),
    ("2001:0:808:808:0:0:80ff:fffe", False, "Teredo, server 8.8.8.8, client 127.0.0.1"),
    ("2001:0:808:808:0:0:5601:5601", False, "Teredo, client 169.254.169.254 (xor'd)"),
]


@pytest.mark.parametrize(("address", "public", "_why"), TABLE, ids=[row[2] for row in TABLE])
def test_address_is_public(address, public, _why):
    assert address_is_public(address) is public


@pytest.mark.parametrize(
    ("address", "carried"),
    [
        ("::ffff:127.0.0.1", ["127.0.0.1"]),
        ("::127.0.0.1", ["127.0.0.1"]),
        ("64:ff9b::a9fe:a9fe", ["169.254.169.254"]),
        ("64:ff9b:1:7f00:0:100::", ["127.0.0.1", str(ipaddress.IPv4Address(0))]),
        ("2002:c0a8:101::1", ["192.168.1.1"]),
        ("2001:0:7f00:1:0:0:f7f7:f7f7", ["127.0.0.1", "8.8.8.8"]),
        ("2a00:1450:4025:401::6c", []),
    ],
)
def test_embedded_ipv4_extracts_what_the_rfcs_put_there(address, carried):
    found = embedded_ipv4(ipaddress.IPv6Address(address))
    assert [str(ip) for ip in found] == carried


def test_teredo_matches_pythons_own_decoding():
    """The hand-written Teredo rule agrees with `IPv6Address.teredo` (server, client)."""
    ip = ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:3fff:fdd2")
    assert embedded_ipv4(ip) == list(ip.teredo)


PRIVATE_IPV6 = [row[0] for row in TABLE if ":" in row[0] and not row[1] and "%" not in row[0]]


@pytest.mark.parametrize("address", PRIVATE_IPV6)
def test_the_card_refuses_an_embedded_private_address(settings, address):
    settings.SMTP_ALLOW_PRIVATE_HOSTS = False
    with pytest.raises(ValidationError) as refused:
        check_public_address(address)
    assert refused.value.code == "server_private"


def test_the_card_page_refuses_nat64_and_compatible_loopback(client, settings, english, db):
    """The two addresses the issue found passing, typed on the card: refused, nothing saved."""
    settings.SMTP_ALLOW_PRIVATE_HOSTS = False
    user = factories.user("ANNA", email="anna@acme.example")
    client.force_login(user)
    for server in ["[64:ff9b::a9fe:a9fe]:587", "[::127.0.0.1]:587"]:
        before = factories.db_rows()
        response = client.post(
            "/accounts/card/",
            {
                "name": "Anna",
                "email": "anna@acme.example",
                "mode": "smtp",
                "server": server,
                "security": "starttls",
            },
        )
        assert response.status_code == 200
        assert "is a private or local address" in response.content.decode()
        assert factories.db_rows() == before


@pytest.mark.parametrize("address", PRIVATE_IPV6)
def test_a_name_resolving_to_an_embedded_private_address_is_refused_at_connect(address):
    """The connect-time check of what a name resolved to (DNS may answer anything)."""
    with pytest.raises(PermanentSendError) as refused:
        check_resolved("smtp.attacker.example", ["8.8.8.8", address])
    assert refused.value.explanation == "private_host"
    # The explanation names the host the user typed, never the address it resolved to.
    text = " ".join(explain(refused.value.explanation, refused.value.params).values())
    assert "smtp.attacker.example" in text
    assert address.split("%")[0] not in text and "169.254" not in text and "127.0" not in text


def test_a_name_resolving_to_public_addresses_only_passes():
    check_resolved("smtp.example.com", ["8.8.8.8", "2a00:1450:4025:401::6c", "64:ff9b::808:808"])


def test_resolve_host_applies_the_guard_to_a_real_lookup(settings):
    """`localhost` really resolves (to 127.0.0.1 and maybe ::1): refused unless allowed."""
    from smtp_settings.transports import resolve_host

    with pytest.raises(PermanentSendError):
        resolve_host("localhost", 25, allow_private=False)
    assert ipaddress.ip_address(resolve_host("localhost", 25, allow_private=True)).is_loopback
