"""The embedded broker never hands a consumer a half-written message (directo_mail/broker.py)."""

import threading
import uuid

from kombu import Connection

COUNT = 300


def test_a_fast_consumer_never_reads_a_half_written_message(tmp_path):
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path)}
    options["control_folder"] = str(tmp_path)
    # A new name each run: kombu remembers declared exchanges per process, and would skip
    # binding the queue in this fresh folder, so every message would be dropped unrouted.
    queue_name = f"race-{uuid.uuid4().hex}"
    payload = {"ids": list(range(2000))}  # large enough that a write takes a while
    received, errors = [], []

    def consume() -> None:
        with Connection(
            "filesystem://",
            transport="directo_mail.broker:Transport",
            transport_options={**options, "polling_interval": 0},
        ) as conn:
            queue = conn.SimpleQueue(queue_name)
            try:
                while len(received) < COUNT:
                    received.append(queue.get(timeout=10).payload)
            except Exception as error:  # the failure under test
                errors.append(error)

    with Connection(
        "filesystem://", transport="directo_mail.broker:Transport", transport_options=options
    ) as conn:
        # Bound before the consumer starts: kombu records a binding per process before writing
        # it, so a second thread's declaration would be skipped while the first one's file
        # write is still under way, and a message published then would go unrouted.
        queue = conn.SimpleQueue(queue_name)
        consumer = threading.Thread(target=consume)
        consumer.start()
        for _ in range(COUNT):
            queue.put(payload)
    consumer.join(30)

    assert errors == []
    assert len(received) == COUNT and all(message == payload for message in received)


def test_messages_come_out_in_the_order_they_went_in(tmp_path, monkeypatch):
    """A consumer takes messages by file name: within one millisecond, and when the clock
    gains a digit (an unpadded 9999999 sorted after 10000000), they keep their order."""
    from directo_mail import broker

    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path)}
    options["control_folder"] = str(tmp_path)
    clock = iter([9.999, 9.999, 9.999, 10.0, 10.0, 10000.0])  # seconds: 9999 ms, then 10000…
    monkeypatch.setattr(broker, "monotonic", lambda: next(clock))
    with Connection(
        "filesystem://", transport="directo_mail.broker:Transport", transport_options=options
    ) as conn:
        queue = conn.SimpleQueue(f"order-{uuid.uuid4().hex}")
        for number in range(6):
            queue.put({"n": number})
        assert [queue.get(timeout=5).payload["n"] for _ in range(6)] == list(range(6))
