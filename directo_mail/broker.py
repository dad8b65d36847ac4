"""The embedded broker: kombu's filesystem transport, with messages written atomically.

kombu's filesystem channel creates a message file and then writes it, while a consumer may
already move and read the file: it reads nothing, the worker dies on the empty JSON and the
message is lost. Here a message is written under a name no consumer looks at and then
renamed into the queue, which POSIX makes atomic.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs) -> None:
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = f"{final}.partial"  # not "<queue>.msg": consumers skip it
        with open(partial, "wb") as stream:
            stream.write(str_to_bytes(dumps(payload)))
        os.replace(partial, final)


class Transport(filesystem.Transport):
    Channel = Channel
