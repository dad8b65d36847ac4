"""The two web processes and two workers of tests/processes.py serve and consume for real."""

from __future__ import annotations

import time

import pytest

from outbox.models import MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from tests import factories


@pytest.fixture
def user(transactional_db):
    factories.company()
    return factories.user("PROC", email="proc@acme.example")


def test_both_web_processes_serve_the_same_database_and_session(app_processes, user):
    pids = {web.pid for web in app_processes.web}
    assert len(pids) == 2 and None not in pids
    for web in app_processes.web:
        anonymous = web.client().get("/accounts/card/", allow_redirects=False)
        assert anonymous.status_code == 302  # login required: it is the app answering
        page = web.client(user).get("/accounts/card/")
        assert page.status_code == 200, web.log[-2000:]
        assert "proc@acme.example" in page.text  # the row made in this process, read there


def test_a_post_through_either_web_process_passes_csrf_and_writes(app_processes, user):
    for web, language in zip(app_processes.web, ["pl", "et"], strict=True):
        response = web.client(user).post(
            "/i18n/setlang/", data={"language": language, "next": "/accounts/card/"}
        )
        assert response.status_code == 200, web.log[-2000:]
        user.refresh_from_db()
        assert user.language == language


def test_both_workers_consume(app_processes, user, smtp_servers):
    """Mails are enqueued in rounds until each worker has sent some (a few rounds at most)."""
    before = app_processes.worker_tasks_done()
    sent = 0
    for _round in range(6):
        for _ in range(6):
            outbox_enqueue(user=user, to=["someone@example.com"], subject="x", body_text="x")
            sent += 1
        smtp_servers.plain.wait_for(sent, timeout=30)
        now = app_processes.worker_tasks_done()
        done = [after - b for after, b in zip(now, before, strict=True)]
        if all(done):
            break
        time.sleep(0.2)
    assert all(done), f"tasks finished by each worker: {done}"
    deadline = time.monotonic() + 30  # the relay has them; the workers record SENT just after
    while OutgoingMessage.objects.filter(state=MessageState.SENT).count() < sent:
        assert time.monotonic() < deadline, "the workers did not record every message sent"
        time.sleep(0.1)
