"""Where a bulk mail's CPU goes, in one process: `python bench/profile_send.py [--n 500]`.

Runs the real code of a job, without broker or worker processes in between, on a fresh SQLite
file in a temp dir against Postfix's smtp-sink: seed N invoices, `invoices_send` (the click),
`invoices_job_prepare` (templates, PDFs, rows), then `outbox_send_batch` over every message in
batches of BULK_BATCH_SIZE. Each phase runs under cProfile and prints CPU ms per mail, SQL
statements per mail and its top functions (cumulative), so a change is measured where it acts.
`PROFILE_TIMER=cpu` attributes CPU time instead of wall time; `PROFILE_CALLERS=<regex>` also
prints who calls the functions it matches (pstats' print_callers).
`--pdf-issued` renders the PDFs before the click (as `invoices_render_pdfs` does when invoices
are issued), so the prepare phase shows what is left without them.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import secrets
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
sys.path.insert(0, str(BASE_DIR / "bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--pdf-issued", action="store_true")
    parser.add_argument("--no-profile", action="store_true", help="CPU and statements only")
    parser.add_argument(
        "--database-url",
        help="postgres://… server: a fresh database there (dropped at the end), FILE_STORAGE "
        "database, instead of SQLite",
    )
    options = parser.parse_args()

    from bulk_send import Databases, sender_set_args
    from cryptography.fernet import Fernet
    from sinks import HOST, SmtpSink

    tmp = Path(tempfile.mkdtemp(prefix="directo-profile-"))
    databases = Databases(options.database_url, tmp)
    database_url = databases.fresh("profile")
    sink = SmtpSink()
    sink.start()
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "directo_mail.settings",
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "DATABASE_URL": database_url,
            "FILE_STORAGE": "database" if options.database_url else "local",
            "MEDIA_ROOT": str(tmp / "media"),
            "CELERY_BROKER_URL": "filesystem://",
            "CELERY_BROKER_DIR": str(tmp / "broker"),
            "EMAIL_URL": f"smtp://{HOST}:2",
            "SMTP_ALLOW_PRIVATE_HOSTS": "true",
            "SMTP_ALLOWED_PORTS": f"25,465,587,{sink.port}",
            "SEND_RATE_LIMITS": "microsoft365=30,smtp.gmail.com=60",
        }
    )
    import logging

    import django

    django.setup()
    logging.disable(logging.INFO)  # the worker's log lines would be measured too
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, reset_queries

    from accounts.models import User
    from invoices.models import Invoice
    from invoices.services import invoices_job_prepare, invoices_send
    from outbox.models import OutgoingMessage
    from outbox.services import outbox_send_batch

    try:
        call_command("migrate", verbosity=0)
        call_command("seed_demo", customers=100, invoices=options.n, stdout=io.StringIO())
        call_command(*sender_set_args(sink.port, "none"), stdout=io.StringIO())
        call_command("sender", "test", "SMTP", stdout=io.StringIO())  # unlocks mass mailing
        user = User.objects.get(code="SMTP")
        settings.DEBUG = True  # count statements
        n = Invoice.objects.count()

        def phase(name: str, run) -> None:
            reset_queries()
            # PROFILE_TIMER=cpu: attributed by CPU time (time.process_time), not wall time.
            cpu_timer = os.environ.get("PROFILE_TIMER") == "cpu"
            profile = cProfile.Profile(time.process_time) if cpu_timer else cProfile.Profile()
            cpu = time.process_time()
            if not options.no_profile:
                profile.enable()
            run()
            profile.disable()
            cpu = time.process_time() - cpu
            queries = len(connection.queries)
            print(
                f"\n## {name}: {1000 * cpu / n:.2f} ms CPU per mail, "
                f"{queries / n:.2f} SQL statements per mail"
            )
            if os.environ.get("PROFILE_SQL"):
                for query in connection.queries[-int(os.environ["PROFILE_SQL"]) :]:
                    print("   ", query["sql"][:300])
            if options.no_profile:
                return
            out = io.StringIO()
            order = os.environ.get("PROFILE_SORT", "cumulative")
            stats = pstats.Stats(profile, stream=out).sort_stats(order)
            stats.print_stats(options.top)
            if callers := os.environ.get("PROFILE_CALLERS"):  # who calls the functions matching
                stats.print_callers(callers)
            print(out.getvalue().split("\n\n", 1)[-1].rstrip())

        if options.pdf_issued:
            from invoices.services import invoices_render_pdfs

            ids = list(Invoice.objects.values_list("pk", flat=True))
            phase("PDFs at issue time", lambda: invoices_render_pdfs(invoice_ids=ids))
        job = invoices_send(user=user, unsent=True)
        phase("prepare (invoices_job_prepare)", lambda: invoices_job_prepare(job_id=job.pk))
        ids = list(
            OutgoingMessage.objects.filter(job=job).order_by("pk").values_list("pk", flat=True)
        )
        size = settings.BULK_BATCH_SIZE

        def send() -> None:
            for start in range(0, len(ids), size):
                outbox_send_batch(message_ids=ids[start : start + size])

        phase("send (outbox_send_batch)", send)
        sent = OutgoingMessage.objects.filter(job=job, state="sent").count()
        print(f"\nsent {sent} of {len(ids)}")
    finally:
        sink.stop()
        from django.db import connections

        connections.close_all()
        databases.drop_all()


if __name__ == "__main__":
    main()
