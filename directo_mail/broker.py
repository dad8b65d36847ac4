"""The embedded broker: kombu's filesystem transport, with messages written atomically.

kombu's filesystem channel creates a file and then writes it, while another process may
already read it: it reads nothing and dies on the empty JSON. Two places do that:
- a message: the consumer moves and reads it at once, so the message is also lost. Here it is
  written under a name no consumer looks at, then renamed into the queue (atomic on POSIX);
- a new exchange table (the queue bindings): here a complete empty table is linked into place
  (atomic create-if-absent), and kombu's own locked update adds the binding to it.
"""

from __future__ import annotations

import itertools
import os
import uuid
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

# Consumers take messages in the order of their file names (kombu sorts them): the time, at
# a fixed width (an unpadded number would sort "10000000" before "9999999" once the clock
# gains a digit, and the older messages would wait behind every newer one), then this
# process's own count, so two messages it sends within a millisecond keep their order.
_sent = itertools.count()


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs) -> None:
        name = f"{round(monotonic() * 1000):015d}_{next(_sent):012d}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = f"{final}.partial"  # not "<queue>.msg": consumers skip it
        with open(partial, "wb") as stream:
            stream.write(str_to_bytes(dumps(payload)))
        os.replace(partial, final)

    def _queue_bind(self, exchange, routing_key, pattern, queue) -> None:
        table = self._exchange_file(exchange)
        self.control_folder.mkdir(exist_ok=True)
        if not table.exists():
            draft = table.with_name(f".{table.name}.{uuid.uuid4()}")
            draft.write_bytes(str_to_bytes(dumps([])))
            try:
                os.link(draft, table)
            except FileExistsError:
                pass  # another process made it first: fine, it is complete too
            finally:
                draft.unlink()
        super()._queue_bind(exchange, routing_key, pattern, queue)


class Transport(filesystem.Transport):
    Channel = Channel
