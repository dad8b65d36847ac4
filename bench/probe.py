"""Helpers the benchmark runs inside the project (Django set up with directo_mail.settings).

    python bench/probe.py pdf-cost            # JSON: time to render every invoice's PDF
    python bench/probe.py job-stats           # JSON: the last bulk job's counts and timestamps
    python bench/probe.py pdfs-kept           # JSON: invoices whose PDF is kept
    python bench/probe.py sent-by-pid         # JSON: the last job's sent mails by worker pid
    python bench/probe.py export-mail DIR     # one sent invoice mail, as the worker built it
    python bench/probe.py interactive-latency COUNT [during-job]
    python bench/probe.py click               # "Send all unsent" through the web view, then wait
                                              # JSON: click-to-"250" of COUNT single mails

The environment (DATABASE_URL, MEDIA_ROOT, …) is the one bench/bulk_send.py gives the worker.
Each command prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _setup() -> None:
    sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "directo_mail.settings")
    import django

    django.setup()


def pdf_cost() -> dict:
    """Render every invoice's PDF again (not stored) the way invoices_send gets it: the invoice
    with its customer, its lines read by the renderer. Fonts are loaded before the clock."""
    from invoices.models import Invoice
    from invoices.pdf import render_invoice_pdf
    from smtp_settings.selectors import company_get

    company = company_get()
    seller = company.name if company else ""
    invoices = list(Invoice.objects.select_related("customer").order_by("pk"))
    render_invoice_pdf(invoices[0], seller=seller)  # font registration, template warm-up
    sizes = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for invoice in invoices:
        sizes += len(render_invoice_pdf(invoice, seller=seller))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "invoices": len(invoices),
        "seconds": wall,
        "cpu_seconds": cpu,
        "ms_per_invoice": 1000 * wall / len(invoices),
        "cpu_ms_per_invoice": 1000 * cpu / len(invoices),
        "mean_pdf_bytes": sizes / len(invoices),
    }


def job_stats() -> dict:
    """The last bulk job: message counts by state, and when it was created, first claimed,
    last sent; how many invoices have their PDF kept."""
    from django.db.models import Count, Max, Min

    from invoices.models import Invoice
    from outbox.models import Attachment, BulkJob

    job = BulkJob.objects.order_by("-pk").first()
    states = dict(job.messages.values_list("state").annotate(n=Count("pk")))
    times = job.messages.aggregate(
        first_claim=Min("claimed_at"), last_sent=Max("sent_at"), first_sent=Min("sent_at")
    )
    return {
        "job": job.pk,
        "state": job.state,
        "total": job.total,
        "states": states,
        "created": job.created_at.timestamp(),
        "first_claim": times["first_claim"].timestamp() if times["first_claim"] else None,
        "first_sent": times["first_sent"].timestamp() if times["first_sent"] else None,
        "last_sent": times["last_sent"].timestamp() if times["last_sent"] else None,
        "invoices": Invoice.objects.count(),
        "invoices_with_pdf": Invoice.objects.exclude(pdf="").count(),
        "attachments": Attachment.objects.filter(message__job=job).count(),
    }


def pdfs_kept() -> dict:
    """How many invoices have their PDF kept (rendered when issued, or by a job)."""
    from invoices.models import Invoice

    return {"kept": Invoice.objects.exclude(pdf="").count(), "invoices": Invoice.objects.count()}


def sent_by_pid() -> dict:
    """The last job's sent messages by the pid in the lease of the worker that sent them."""
    from django.db.models import Count

    from outbox.models import BulkJob, MessageState

    job = BulkJob.objects.order_by("-pk").first()
    rows = (
        job.messages.filter(state=MessageState.SENT).values_list("worker").annotate(n=Count("pk"))
    )
    counts: dict[str, int] = {}
    for lease, n in rows:
        pid = lease.split(":")[1] if lease.count(":") >= 2 else "?"
        counts[pid] = counts.get(pid, 0) + n
    return counts


def export_mail(directory: str) -> dict:
    """The first sent message of the last job as bytes (message_bytes, as sent) and its
    parts for the peer: same From, To, subject, bodies and PDF."""
    from email import message_from_bytes, policy

    from outbox.message import envelope_for, message_bytes
    from outbox.models import BulkJob, MessageState
    from smtp_settings.resolve import SenderConfig

    job = BulkJob.objects.order_by("-pk").first()
    message = job.messages.filter(state=MessageState.SENT).order_by("pk").first()
    sender = SenderConfig.from_snapshot(message.sender)
    raw = message_bytes(message, sender)
    mime = message_from_bytes(raw, policy=policy.default)
    envelope = envelope_for(message, sender)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / "message.eml").write_bytes(raw)
    attachment = message.attachments.first()
    with attachment.file.open("rb") as stream:
        (out / "attachment.pdf").write_bytes(stream.read())
    parts = {
        "mail_from": envelope.mail_from,
        "recipients": list(envelope.recipients),
        "from": str(mime["From"]),
        "to": list(message.to),
        "subject": message.subject,
        "body_text": mime.get_body(("plain",)).get_content(),
        "body_html": mime.get_body(("html",)).get_content() if message.body_html else "",
        "attachment_name": attachment.filename,
        "attachment_type": attachment.content_type,
        "message_bytes": len(raw),
    }
    (out / "parts.json").write_text(json.dumps(parts))
    return parts


def interactive_latency(count: str, when: str = "idle") -> dict:
    """Click to the server's "250" of single mails (a test e-mail's path: outbox_enqueue, the
    commit, the interactive lane, the sender), one after another, 0.2 s apart. With
    `during-job` it first waits until the last bulk job is sending and counts only the mails
    sent while it still was. Milliseconds from before the enqueue to the message's sent_at."""
    from django.db import transaction
    from django.utils import timezone

    from accounts.models import User
    from outbox.models import BulkJob, JobState, MessageState, OutgoingMessage
    from outbox.services import outbox_enqueue

    user = User.objects.get(code="SMTP")
    during = when == "during-job"
    deadline = time.monotonic() + 120
    if during:
        while not OutgoingMessage.objects.filter(
            job__isnull=False, state=MessageState.SENT
        ).exists():
            if time.monotonic() > deadline:
                return {"samples": 0, "error": "the job never started sending"}
            time.sleep(0.05)
    latencies = []
    for _ in range(int(count)):
        clicked = timezone.now()
        with transaction.atomic():  # as a view: the task leaves on commit
            message = outbox_enqueue(
                user=user, to=["latency@bench.example"], subject="Latency probe", body_text="x"
            )
        while (
            sent := OutgoingMessage.objects.filter(pk=message.pk)
            .values_list("sent_at", flat=True)
            .first()
        ) is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        if sent is None:
            break
        job = BulkJob.objects.order_by("-pk").first()
        if during and (job is None or job.state != JobState.RUNNING):
            break  # the job is over: later samples would be idle ones
        latencies.append((sent - clicked).total_seconds() * 1000)
        time.sleep(0.2)
    latencies.sort()

    def pick(q: float) -> float | None:
        return latencies[min(int(q * len(latencies)), len(latencies) - 1)] if latencies else None

    return {
        "when": when,
        "samples": len(latencies),
        "p50_ms": pick(0.5),
        "p95_ms": pick(0.95),
        "max_ms": latencies[-1] if latencies else None,
    }


def click(timeout: str = "3600") -> dict:
    """The SMTP user's click on "Send all unsent" as a running web server handles it: Django's
    test client in this warm process (the whole middleware stack, ATOMIC_REQUESTS, the view,
    the commit that hands the job to the worker), after one GET of the invoice list so the
    URLs, templates and session are loaded as in a server that has been up. Then waits, as
    `bulk_send --wait` does, until the job is no longer running. `clicked` is the wall clock
    just before the POST; the answer's time and CPU are the click's own cost."""
    from django.conf import settings
    from django.test import Client
    from django.urls import reverse

    from accounts.models import User
    from outbox.models import BulkJob, JobState
    from outbox.services import bulk_job_progress

    host = next((h for h in settings.ALLOWED_HOSTS if h not in ("*", "")), "localhost")
    client = Client(HTTP_HOST=host.lstrip("."))
    client.force_login(User.objects.get(code="SMTP"))
    page = client.get(reverse("invoices:list"))
    if page.status_code != 200:
        raise RuntimeError(f"the invoice list answered {page.status_code}")
    cpu = time.process_time()
    clicked = time.time()
    answer = client.post(reverse("invoices:send"), {"action": "unsent"})
    answered = time.time()
    cpu = time.process_time() - cpu
    job = BulkJob.objects.order_by("-pk").first()
    expected = reverse("invoices:job", args=[job.pk]) if job else None
    if answer.status_code != 302 or answer.url != expected:
        raise RuntimeError(f"the click answered {answer.status_code} {answer.get('Location')}")
    progress = bulk_job_progress(job=job)
    deadline = time.monotonic() + float(timeout)
    while progress["state"] == JobState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.5)
        job.refresh_from_db()
        progress = bulk_job_progress(job=job)
    return {
        **progress,
        "clicked": clicked,
        "answered": answered,
        "click_cpu_seconds": cpu,
    }


def main() -> None:
    _setup()
    command, *args = sys.argv[1:]
    result = {
        "pdf-cost": pdf_cost,
        "job-stats": job_stats,
        "pdfs-kept": pdfs_kept,
        "sent-by-pid": sent_by_pid,
        "export-mail": export_mail,
        "interactive-latency": interactive_latency,
        "click": click,
    }[command](*args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
