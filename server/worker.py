"""The gunicorn worker for single-threaded workers (`--threads 1`): gthread's event loop,
keep-alive and shutdown, with each request served on the loop's own thread.

gunicorn's gthread worker polls its connections on the main thread and hands each readable one
to a thread pool, which hands it back through a queue and a wake-up pipe when the request is
done. With one pool thread that is still one request at a time, plus, per request, a future,
two thread switches (each a GIL hand-off) and a pipe round trip: on the collector's two cores
0.82 against 0.71 ms of server CPU per upload (`benchmarks/server_ingest.py --sizes tiny
--updates 3000`, with and without `--worker-class gthread`; docs/decisions.md), against 0.13 ms
of in-process work for a small update. Here the loop serves a readable connection itself, and a
new connection waits on the poller until its first bytes arrive (gthread blocks a pool thread
for up to 5 s on it), so the loop only ever reads a request that has begun.

What it shares with gunicorn's `sync` worker: while a request is served the loop does nothing
else, including the heartbeat, so a client that stalls mid-request holds the worker until
gunicorn's `--timeout` restarts it (the collector's state is on disk, and devices retry an upload
with its upload id). gthread with one thread is no better there (its one thread waits on such a
client for as long as it stalls, with nothing to restart it). Devices upload on unmetered
networks only; on links where slow clients are expected, put a buffering proxy in front, as
gunicorn's docs advise for sync workers, or run more threads (the gthread worker).

It uses gthread's own connection handling (`handle`, `finish_request`, the keep-alive and pending
queues), so it follows the gunicorn that requirements.txt pins; tests/test_server_ingest.py runs
real servers with it and with gthread.
"""

from __future__ import annotations

import errno
import selectors
import time
from concurrent.futures import Future
from functools import partial

from gunicorn.workers.gthread import TConn, ThreadWorker

# what `gunicorn --worker-class` takes (server/serve.py picks it when threads == 1)
WORKER_CLASS = "server.worker.LoopWorker"


class LoopWorker(ThreadWorker):
    """gthread with the request served on the event loop's thread (no pool hand-offs)."""

    def accept(self, listener) -> None:
        """A new connection waits on the poller until it is readable (gthread's pending queue,
        with its keep-alive timeout), rather than blocking the loop until its first bytes."""
        try:
            sock, addr = listener.accept()
        except OSError as e:  # another worker took it, or the client gave up
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED):
                return
            raise
        self.nr_conns += 1
        sock.setblocking(False)
        conn = TConn(self.cfg, sock, addr, listener.getsockname())
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def enqueue_req(self, conn) -> None:
        """Serve the connection's request now, and any next request it has already sent (a
        pipelining client's, or bytes a body drain read ahead), then hand the connection back
        to the loop's keep-alive bookkeeping as gthread does when its pool is done."""
        keepalive = self.handle(conn)
        while keepalive and self.alive and conn.parser.unreader.buf.getvalue():
            keepalive = self.handle(conn)
        done: Future = Future()
        done.set_result(keepalive)
        self.finish_request(conn, done)
