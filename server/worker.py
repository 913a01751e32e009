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

from concurrent.futures import Future

from gunicorn.workers.gthread import _DEFER, ThreadWorker

# what `gunicorn --worker-class` takes (server/serve.py picks it when threads == 1)
WORKER_CLASS = "server.worker.LoopWorker"


def _done(result) -> Future:
    """A finished future, as gthread's `finish_request` expects from its pool."""
    fut: Future = Future()
    fut.set_result(result)
    return fut


class LoopWorker(ThreadWorker):
    """gthread with the request served on the event loop's thread (no pool hand-offs)."""

    def enqueue_req(self, conn) -> None:
        """Serve the connection's request now, and any next request it has already sent (a
        pipelining client's, or bytes a body drain read ahead), then hand the connection back
        to the loop's keep-alive bookkeeping as gthread does when its pool is done. A new
        connection with nothing read yet goes to gthread's pending queue (on the poller, with
        its keep-alive timeout) rather than blocking the loop until its first bytes."""
        if not conn.initialized and not conn.data_ready:
            self.finish_request(conn, _done(_DEFER))
            return
        keepalive = self.handle(conn)
        while keepalive and self.alive and conn.parser.unreader.buf.getvalue():
            keepalive = self.handle(conn)
        self.finish_request(conn, _done(keepalive))
