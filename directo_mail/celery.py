"""The Celery application, configured from Django settings (CELERY_ namespace)."""

import os

from celery import Celery
from celery.signals import (
    task_received,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "directo_mail.settings")

app = Celery("directo_mail")
# https://docs.celeryq.dev/en/stable/django/first-steps-with-django.html
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# Worker leases (outbox.leases): every process that runs tasks holds one. A prefork child gets
# worker_process_init; a solo (or threads) worker runs tasks in the process that gets
# worker_ready, which also forgets this host's dead workers and sweeps at once, so a worker
# restarted after a crash takes their work back without waiting for beat.
@worker_process_init.connect
def _child_lease(**kwargs) -> None:
    from outbox.leases import lease_start

    lease_start()


@worker_ready.connect
def _ready(**kwargs) -> None:
    from outbox.leases import lease_start, leases_forget_dead_here
    from outbox.tasks import sweep

    lease_start()
    if leases_forget_dead_here():
        sweep.delay()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _lease_end(**kwargs) -> None:
    from outbox.leases import lease_end

    lease_end()


# What a task is for becomes the receiving process's at once (outbox.services.outbox_received),
# before it runs: a worker killed with tasks it had taken but not started (prefetched, held for
# an eta) leaves them to the sweep within a lease, not after the claim timeout.
@task_received.connect
def _received(request=None, **kwargs) -> None:
    from outbox.services import outbox_received

    if request is not None:
        outbox_received(task=request.name, args=request.args)
