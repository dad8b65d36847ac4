"""The peer run: django-post-office queues N invoice mails and `send_queued_mail` sends them.

    DJANGO_SETTINGS_MODULE=bench.peer_settings python bench/peer.py --n N --mail DIR --lockfile F

DIR holds parts.json and attachment.pdf written by `bench/probe.py export-mail`: the same
From, To, subject, text and HTML bodies and PDF as the project's mail. Queueing happens in one
transaction (as the project's invoices_send does), each mail with its own stored copy of the
PDF; then `manage.py send_queued_mail --processes 2` (post_office's documented way, looping
over batches of 100 with 2 forked processes of 5 threads each) sends them. Prints one JSON
object: timings, CPU of this process and its children, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--mail", type=Path, required=True)
    parser.add_argument("--lockfile", required=True)
    parser.add_argument("--processes", type=int, default=2)
    options = parser.parse_args()

    sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peer_settings")
    import django

    django.setup()
    from django.core.files.base import ContentFile
    from django.core.management import call_command
    from django.db import transaction
    from post_office import mail
    from post_office.models import STATUS, Email

    call_command("migrate", verbosity=0)
    parts = json.loads((options.mail / "parts.json").read_text())
    pdf = (options.mail / "attachment.pdf").read_bytes()

    wall, cpu = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    with transaction.atomic():
        for _ in range(options.n):
            mail.send(
                recipients=parts["to"],
                sender=parts["from"],
                subject=parts["subject"],
                message=parts["body_text"],
                html_message=parts["body_html"],
                attachments={
                    parts["attachment_name"]: {
                        "file": ContentFile(pdf),
                        "mimetype": parts["attachment_type"],
                    }
                },
                priority="medium",
            )
    queue_seconds = time.perf_counter() - wall
    queue_cpu = _cpu(resource.RUSAGE_SELF) - cpu

    wall = time.perf_counter()
    cpu_self, cpu_children = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    call_command(
        "send_queued_mail", processes=options.processes, lockfile=options.lockfile, verbosity=0
    )
    send_seconds = time.perf_counter() - wall
    send_cpu = (_cpu(resource.RUSAGE_SELF) - cpu_self) + (
        _cpu(resource.RUSAGE_CHILDREN) - cpu_children
    )
    sent = Email.objects.filter(status=STATUS.sent).count()
    print(
        json.dumps(
            {
                "n": options.n,
                "sent": sent,
                "not_sent": Email.objects.exclude(status=STATUS.sent).count(),
                "queue_seconds": queue_seconds,
                "queue_cpu_seconds": queue_cpu,
                "send_seconds": send_seconds,
                "send_cpu_seconds": send_cpu,
                "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "peak_rss_children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
            }
        )
    )


if __name__ == "__main__":
    main()
