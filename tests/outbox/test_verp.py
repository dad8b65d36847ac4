"""The VERP envelope sender names its message and cannot be forged for another (S7.4)."""

import pytest

from outbox.message import verp_address, verp_message_pk

DOMAIN = "event.acme.test"


def test_a_verp_address_leads_back_to_its_message():
    address = verp_address(42, DOMAIN)
    assert address.startswith("bounces+42-") and address.endswith(f"@{DOMAIN}")
    assert verp_message_pk(address, DOMAIN) == 42
    assert verp_message_pk(f"<{address}>", DOMAIN) == 42  # as a DSN may quote it


@pytest.mark.parametrize(
    "address",
    [
        "bounces+43-{sig}@event.acme.test",  # another message, this one's signature
        "bounces+42-0000000000000000@event.acme.test",  # a made-up signature
        "bounces+42-{sig}@other.test",  # another domain
        "someone@event.acme.test",
        "bounces+x-{sig}@event.acme.test",
    ],
)
def test_forged_or_foreign_addresses_name_no_message(address):
    signature = verp_address(42, DOMAIN).split("-", 1)[1].split("@")[0]
    assert verp_message_pk(address.format(sig=signature), DOMAIN) is None
