"""A process that builds a large send's issues beside the send loop, so building and sending do not share
one interpreter.

Building costs about half a millisecond of CPU per reader, as much as sending a message does; in a
thread of the sending process it would hold the interpreter lock the SMTP threads need after every
round trip, and both would crawl. So a send of many readers builds in a fresh interpreter (``python
-c``, as the render process: not a fork of a process that may run threads), which stores each chunk
(IssueBuilder.store_issues: the same chunks, build locks and idempotent writes as in the sending
process) and says so over a socket pair; the sending process turns that into its ``IssueFeed``. The
worker ignores SIGINT and SIGTERM (the sender decides when to stop, by a message or by closing the
socket), stops between chunks when told or when the sender is gone, and exits.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import date, datetime
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from digest.errors import DigestError
from digest.issue_feed import IssueFeed
from digest.terminal import SafeFormatter

if TYPE_CHECKING:
    from digest.config import Settings
    from digest.models import Subscriber
    from digest.send_engine import SendSummary

__all__ = ["build_alongside", "serve"]

log = logging.getLogger("digest")

_CODE = "import sys; from digest.build_process import serve; serve(int(sys.argv[1]))"
# How much lower the worker's CPU priority is: a send of 20,000 readers through Postfix, on two busy
# cores, delivered about 450 messages a second while building at 10 (250 at 0) and ended 10% sooner
# (one pair of runs, load 3).
_NICE = 10


@contextmanager
def build_alongside(settings: Settings, issue_date: date, now: datetime, targets: list[Subscriber] | None,
                    summary: SendSummary) -> Iterator[IssueFeed]:
    """Build the issues of ``targets`` (every reader due on ``issue_date`` if None) in a worker process
    for the block, as IssueBuilder.alongside does in a thread: leaving the block stops the building
    after the chunk in hand and waits for it; then the readers it skipped for having nothing new are
    counted in ``summary`` (those found served already are in ``feed.already``) and a failure of the
    worker is raised (DigestError)."""
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen([sys.executable, "-c", _CODE, str(theirs.fileno())],
                                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
    finally:
        theirs.close()
    conn = Connection(ours.detach())
    feed = IssueFeed()
    skipped: list[int] = []
    failed: list[str] = []

    def listen() -> None:
        try:
            while True:
                kind, value, error = conn.recv()
                if kind == "stored":
                    feed.stored(value)
                    continue
                skipped.append(value[0])
                feed.already.extend(value[1])
                failed.extend([error] if error else [])
                return
        except (EOFError, OSError) as err:
            failed.append(f"the build process ended before it was done ({err or type(err).__name__})")
        finally:
            feed.finish()

    def stop() -> None:
        with suppress(OSError):  # it is gone already
            conn.send("stop")

    listener = threading.Thread(target=listen, name="digest-build-listener", daemon=True)
    try:
        conn.send_bytes(pickle.dumps((settings, logging.getLogger("digest").getEffectiveLevel(), issue_date, now,
                                      targets)))
        listener.start()
        feed.on_cancel(stop)
        yield feed
    finally:
        feed.cancel()
        if listener.is_alive():
            listener.join()
        conn.close()  # the worker sees the end of its input and exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        summary.skipped += sum(skipped)
    if failed:
        raise DigestError(f"building issues failed: {failed[0]}")


def serve(fd: int) -> None:
    """The worker: its orders first, then one ``store_issues``, each chunk reported as it is stored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(fd)
    settings, level, issue_date, now, targets = pickle.loads(conn.recv_bytes())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s (build process): %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])

    from digest.compose import Composer, topic_labels
    from digest.issues import IssueBuilder
    from digest.selection import SelectionContext
    from digest.send_engine import SendSummary
    from digest.signing_key import signing_key
    from digest.store import Store

    store = Store(settings.database.url, migrate=False)
    sel = settings.selection
    context = SelectionContext(labels=topic_labels(settings), include_other=sel.include_other,
                               daily_window_days=sel.daily_window_days)
    builder = IssueBuilder(settings, store, context, Composer(settings, signing_key(settings, store)),
                           threading.Event())
    summary = SendSummary()
    already: list[int] = []
    error: str | None = None
    try:
        subs = iter(targets) if targets is not None else builder.due(issue_date)
        niced: list[bool] = []

        def built(created: int) -> None:
            conn.send(("stored", created, None))
            if not niced:
                # The first chunk at full speed (nothing goes out before it); from then on building
                # runs ahead of sending: it may wait for a free core, the render process and the SMTP
                # threads (each message a chain of round trips) may not.
                os.nice(_NICE)
                niced.append(True)

        # Anything from the sender (a stop, or the end of the socket) stops the building between chunks.
        builder.store_issues(subs, issue_date, now, summary, None, built=built, stop=conn.poll, already=already)
    except (OSError, EOFError):
        return  # the sender is gone
    except Exception as err:  # told to the sender, which fails the run with it
        log.exception("building issues failed")
        error = str(err) or type(err).__name__
    finally:
        store.close()
    with suppress(OSError):
        conn.send(("done", (summary.skipped, already), error))
