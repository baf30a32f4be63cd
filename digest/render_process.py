"""A process that renders the send loop's messages, so the sending process's threads keep the interpreter
to themselves: their SMTP round trips then wait on the network, not on rendering.

The sender hands it claimed deliveries in small batches (``submit``) and takes the results back in the
same order (``receive``): for each delivery its message, or the end of its attempt when it must not be
sent (the reader left, the template failed). The worker only reads the database. It is a fresh
interpreter (``python -c``, not a fork of a process that may run threads), talks over a socket pair,
ignores SIGINT and SIGTERM (the sender decides when to stop) and exits when the socket closes, also when
the sender is killed.
"""

from __future__ import annotations

import gc
import logging
import pickle
import signal
import socket
import subprocess
import sys
from collections import deque
from datetime import datetime
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from digest.models import AttemptEnd, Delivery, OutgoingMessage, Paper
from digest.terminal import SafeFormatter

if TYPE_CHECKING:
    from digest.config import Settings

__all__ = ["RenderProcess", "serve"]

log = logging.getLogger("digest")

_CODE = "import sys; from digest.render_process import serve; serve(int(sys.argv[1]))"


class RenderProcess:
    """One worker process. Not thread-safe: the send loop's coordinating thread alone uses it.

    ``ready()`` turns True once the worker has built its renderer (about a second after start); raises
    OSError or EOFError if the worker is gone, after which the send loop renders by itself.
    """

    def __init__(self, settings: Settings) -> None:
        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen([sys.executable, "-c", _CODE, str(theirs.fileno())],
                                          pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send_bytes(pickle.dumps((settings, logging.getLogger("digest").getEffectiveLevel())))
        self._ready = False
        self.pending: deque[list[Delivery]] = deque()

    def ready(self, wait: float = 0.0) -> bool:
        """Whether the worker has said it is ready, waiting up to ``wait`` seconds for it."""
        if not self._ready and self._conn.poll(wait):
            self._ready = self._conn.recv() == "ready"
        return self._ready

    def submit(self, now: datetime, deliveries: list[Delivery]) -> None:
        self._conn.send((now, deliveries))
        self.pending.append(deliveries)

    def receive(self, timeout: float = 120.0) -> list[tuple[Delivery, OutgoingMessage | AttemptEnd]]:
        """The oldest submitted batch, rendered (waits for it)."""
        if not self._conn.poll(timeout):
            raise TimeoutError("the render process did not answer")
        results = self._conn.recv()
        return list(zip(self.pending.popleft(), results, strict=True))

    def close(self) -> None:
        """Stop the worker (idempotent)."""
        if self._conn.closed:
            return
        self._conn.close()  # the worker sees the end of its input and exits
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def serve(fd: int) -> None:
    """The worker's main loop: settings first, then a batch at a time until the socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(fd)
    settings, level = pickle.loads(conn.recv_bytes())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s (render process): %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])

    from digest.compose import Composer
    from digest.signing_key import signing_key
    from digest.store import Store

    store = Store(settings.database.url, migrate=False)
    composer = Composer(settings, signing_key(settings, store))
    composer.renderer  # noqa: B018 (compiled before saying ready)
    papers: dict[str, Paper] = {}  # one Paper object per paper for the run: shared bodies need it
    gc.collect()
    gc.freeze()  # what this process holds for its one run is never garbage (see digest.gcpause)
    try:
        conn.send("ready")
        while True:
            try:
                now, deliveries = conn.recv()
            except (EOFError, OSError):
                return  # the sender is done (or gone)
            issues = store.load_issues([d.issue_id for d in deliveries], composer.labels, papers)
            conn.send([composer.prepare(d, issues.get(d.issue_id), now) for d in deliveries])
    except OSError:
        return  # the sender went away while this was rendering
    finally:
        store.close()
