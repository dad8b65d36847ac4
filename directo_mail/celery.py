"""The Celery application, configured from Django settings (CELERY_ namespace)."""

import os

from celery import Celery
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.signals import (
    task_prerun,
    task_received,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "directo_mail.settings")

app = Celery("directo_mail")
# https://docs.celeryq.dev/en/stable/django/first-steps-with-django.html
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# Worker leases (outbox.leases): every process that runs tasks holds one. A prefork child
# takes it before its first task (task_prerun: after Celery's Django fixup has dropped the
# database connection the child inherited, which worker_process_init receivers may run before);
# a solo (or threads) worker runs tasks in the process that gets worker_ready, which also
# forgets this host's dead workers and sweeps at once, so a worker restarted after a crash takes
# their work back without waiting for beat.
@task_prerun.connect
def _task_lease(**kwargs) -> None:
    from outbox.leases import lease_start

    lease_start()  # once per process; then a check


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
# before it runs, where that process runs it: a worker killed with tasks it had taken but not
# started leaves them to the sweep within a lease. A prefork parent only hands tasks to its
# children (which mark what they hold themselves): it marks nothing, and does no database work
# in its consumer loop.
@task_received.connect
def _received(sender=None, request=None, **kwargs) -> None:
    if request is None or isinstance(getattr(sender, "pool", None), PreforkPool):
        return
    from outbox.services import outbox_received

    outbox_received(task=request.name, args=request.args)
