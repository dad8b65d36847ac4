"""The plain-text formats, RFC 3464 in a text part, a broken top-level boundary, and which
"recipients" are never ones (issue 16, items 2-4). The whole corpora are in test_corpus.py;
these are the rules one by one, each with the mail that needs it."""

from __future__ import annotations

import pytest

from bounces.parse import parse_bounce, valid_recipient

DRAGONFLY = b"""From: MAILER-DAEMON <>
To: kijitora@df.example.jp
Subject: Mail delivery failed
Message-Id: <e0720@df.example.jp>

This is the DragonFly Mail Agent v0.13 at df.example.jp.

There was an error delivering your mail to <nyaan@google.example.com>.

gmail-smtp-in.l.google.com [74.125.203.27] did not like our RCPT TO:
550 5.1.1 The email account that you tried to reach does not exist.

Message headers follow.

Received: from root (uid 0)
\t(envelope-from kijitora@df.example.jp)
Subject: Nyaan 01
To: <nyaan@google.example.com>
From: <kijitora@df.example.jp>
"""


def test_a_dragonfly_notice_names_its_recipient_with_the_servers_reply():
    report = parse_bounce(DRAGONFLY)
    assert report.kind == "bounce"
    [recipient] = report.recipients
    assert recipient.address == "nyaan@google.example.com"
    assert recipient.status == "5.1.1" and recipient.diagnostic.startswith("550 5.1.1")
    assert recipient.source == "notice" and recipient.permanent


def test_the_sender_in_the_notice_is_never_a_recipient():
    """Zoho-like: the notice names the sender's own address before the failed one."""
    raw = DRAGONFLY.replace(
        b"There was an error",
        b"Your message from <kijitora@df.example.jp> failed.\n\nThere was an error",
    )
    assert [r.address for r in parse_bounce(raw).recipients] == ["nyaan@google.example.com"]


def test_a_test_mail_to_its_own_sender_still_bounces_for_it():
    raw = DRAGONFLY.replace(b"nyaan@google.example.com", b"kijitora@df.example.jp")
    assert [r.address for r in parse_bounce(raw).recipients] == ["kijitora@df.example.jp"]


def test_an_address_without_a_servers_reply_beside_failed_ones_is_not_one():
    """A notice that quotes some other address (a help desk's, a list's) next to a failed
    recipient with the server's reply names only that recipient."""
    raw = DRAGONFLY.replace(
        b"\nMessage headers follow.",
        b"Questions? Write to help@df.example.jp, it failed for you too.\n"
        b"\nMessage headers follow.",
    )
    assert [r.address for r in parse_bounce(raw).recipients] == ["nyaan@google.example.com"]


def test_a_delay_warning_is_a_delay():
    raw = DRAGONFLY.replace(b"Mail delivery failed", b"Delivery Status Notification (Delay)")
    [recipient] = parse_bounce(raw).recipients
    assert not recipient.permanent and recipient.action == "delayed"


AMAZON_WORKMAIL = b"""From: MAILER-DAEMON@us-west-2.amazonses.com
To: kijitora@example.jp
Subject: Delivery Status Notification (Failure)
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="B"

--B
Content-Type: text/plain; charset=iso-8859-15
Content-Transfer-Encoding: quoted-printable

An error occurred while trying to deliver the mail to the following recip=
ients:
neko@example.org

Technical report:
Reporting-MTA: d=
ns; a27-85.smtp-out.us-west-2.amazonses.com

Final-Recipient: rfc822; neko@example.org
Action: failed
Status: 4.4.7
Diagnostic-Code: smtp; 421 4.4.7 timed out

--B--
"""


def test_rfc3464_fields_in_a_quoted_printable_text_part_are_read_as_a_report():
    [recipient] = parse_bounce(AMAZON_WORKMAIL).recipients
    assert (recipient.address, recipient.source) == ("neko@example.org", "dsn-in-text")
    # Action decides (item 1): "failed", though the status is a 4.x.x.
    assert recipient.permanent and recipient.status == "4.4.7"


DSN_BODY = b"""--REAL
Content-Type: text/plain

Your message could not be delivered.

--REAL
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; cat@example.net
Action: failed
Status: 5.1.1

--REAL--
"""


def test_a_top_level_boundary_the_body_does_not_use_is_found_in_the_body():
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\nSubject: Undelivered Mail Returned to Sender\n"
        b"Auto-Submitted: auto-replied\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="RENAMED"\n\n'
        + DSN_BODY
    )
    report = parse_bounce(raw)
    # Read as a report: never an auto-reply, whatever Auto-Submitted says.
    assert report.kind == "bounce"
    assert [(r.address, r.source) for r in report.recipients] == [("cat@example.net", "dsn")]


def test_a_report_without_a_recipient_block_fails_for_the_returned_messages_recipients():
    raw = b"""From: MAILER-DAEMON@mx.example.net
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

\t--- Delivery report unavailable ---

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

--B
Content-Type: message/rfc822

From: <invoices@acme.example>
To: <customer@example.org>
Subject: Invoice

--B--
"""
    report = parse_bounce(raw)
    assert report.kind == "bounce"
    assert [(r.address, r.source) for r in report.recipients] == [
        ("customer@example.org", "returned-to")
    ]


def test_cr_only_line_ends_read_like_lf():
    assert parse_bounce(DRAGONFLY.replace(b"\n", b"\r")).recipients == (
        parse_bounce(DRAGONFLY).recipients
    )


def test_an_mbox_from_line_before_the_header_is_no_header():
    raw = b"From MAILER-DAEMON Tue Jun 11 18:02:02 2024\n" + DRAGONFLY
    assert parse_bounce(raw).recipients == parse_bounce(DRAGONFLY).recipients


@pytest.mark.parametrize(
    "junk",
    [
        '"bounce":{"bouncedRecipients":[{"emailAddress":"a@b.example"}]',
        "|/usr/local/bin/neko kijitora@example.com",
        "/mail/spool/q002.kijitora.gol.com/n2.nyaan",
        "@mx.example.org",
        "david...@gmail.com",
        "a b@example.com",
        "x@localhost",
        "<a@b.example>",
    ],
)
def test_junk_is_never_a_recipient(junk):
    assert not valid_recipient(junk)


@pytest.mark.parametrize(
    "address", ["jürgen@exämple.de", "o'brien@example.ie", "a+tag@sub.example.co.jp"]
)
def test_real_addresses_are(address):
    assert valid_recipient(address)


def test_an_out_of_office_reply_names_no_recipient():
    """A vacation reply quoting addresses in its text is no failure report."""
    raw = b"""From: anna@example.org
To: kijitora@acme.example
Subject: Automatic reply: Invoice 7
Auto-Submitted: auto-replied

I am out of the office until Monday. For urgent matters write to bob@example.org;
mail to anna@example.org is read when I am back (no error, nothing failed).
"""
    report = parse_bounce(raw)
    assert report.kind == "auto_reply" and report.recipients == ()


def test_a_notice_that_says_nothing_failed_names_no_recipient():
    raw = b"""From: postmaster@example.org
To: kijitora@acme.example
Subject: Your message

Thank you, your message to <anna@example.org> was received and will be read soon.
"""
    assert parse_bounce(raw).recipients == ()


ARF = b"""From: <abusedesk@provider.example>
To: <fbl@event.example>
Subject: FW: Invoice 7
Message-ID: <arf-1@provider.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="part1"

--part1
Content-Type: text/plain

This is an email abuse report for an email message received from IP 192.0.2.1.

--part1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <bounces+x@event.example>
Original-Rcpt-To: <customer@example.org>
Source-IP: 192.0.2.1

--part1
Content-Type: message/rfc822

Return-Path: <bounces+x@event.example>
From: <invoices@acme.example>
To: <customer@example.org>
Subject: Invoice 7
Message-ID: <m1@acme.example>

Please find attached.
--part1--
"""


def test_an_arf_feedback_report_is_a_complaint_and_no_bounce():
    report = parse_bounce(ARF)
    assert report.kind == "complaint"
    assert report.recipients == ()  # kept apart: nothing failed
    assert (report.feedback_type, report.complainants) == ("abuse", ("customer@example.org",))
    assert report.original_message_id == "<m1@acme.example>"
    assert "bounces+x@event.example" in report.verp_candidates  # finds our message


def test_a_feedback_report_without_original_rcpt_to_names_the_returned_messages_recipient():
    raw = ARF.replace(b"Original-Rcpt-To: <customer@example.org>\n", b"")
    assert parse_bounce(raw).complainants == ("customer@example.org",)


def test_recipient_blocks_without_a_blank_line_between_are_each_read():
    """AOL writes two recipients' fields in one block: each is a recipient of its own."""
    raw = b"""From: MAILER-DAEMON@aol.example
Subject: Undeliverable
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; omr.aol.example
Final-Recipient: rfc822; full@example.jp
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp; 550 5.2.2 Mailbox Full
Final-Recipient: rfc822; gone@example.jp
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 User Unknown

--B--
"""
    found = {(r.address, r.status, r.reason) for r in parse_bounce(raw).recipients}
    assert found == {
        ("full@example.jp", "5.2.2", "mailbox_full"),
        ("gone@example.jp", "5.1.1", "user_unknown"),
    }
