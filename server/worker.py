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

Both worker classes read each request whole on the event loop before serving it
(server/read_ahead.py): a client that stalls mid-headers or mid-body holds a buffer and a
poller entry until its read deadline (then 408), never the loop or a pool thread, so one slow
client cannot hold up the others, as a buffering proxy in front would ensure.

It uses gthread's own connection handling (`handle`, `finish_request`, the keep-alive and pending
queues), so it follows the gunicorn that requirements.txt pins; tests/test_server_ingest.py runs
real servers with it and with gthread.

Both worker classes here answer the requests gunicorn refuses before the app sees them (a
request line or header it cannot parse, Content-Length beside chunked, an unknown transfer
coding) in the API's JSON, `{"error", "detail"}`, instead of gunicorn's HTML page: importing this
module, which gunicorn does in each worker process to load the class, replaces
`gunicorn.util.write_error`, the one function gunicorn writes those answers with.
"""

from __future__ import annotations

import json
from concurrent.futures import Future

from gunicorn import util
from gunicorn.workers.gthread import _DEFER
from gunicorn.workers.gthread import ThreadWorker as GThreadWorker

from server.read_ahead import ReadAhead

# what `gunicorn --worker-class` takes (server/serve.py picks one by the thread count)
WORKER_CLASS = "server.worker.LoopWorker"
THREAD_WORKER_CLASS = "server.worker.ThreadWorker"
ERROR_CODES = {400: "bad_request", 403: "forbidden", 414: "too_large", 417: "bad_request", 431: "too_large",
               500: "internal", 501: "not_implemented"}


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's `util.write_error` with the API's JSON body (docs/http_api.md); the detail is
    gunicorn's own message, cut to 200 characters."""
    body = json.dumps({"error": ERROR_CODES.get(status_int, "bad_request"), "detail": str(mesg)[:200]}).encode()
    head = (f"HTTP/1.1 {int(status_int)} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin1") + body)


util.write_error = write_json_error


class ThreadWorker(ReadAhead, GThreadWorker):
    """gunicorn's gthread worker, with each request read whole on the event loop before a pool
    thread serves it (server/read_ahead.py) and its refusals in JSON (the module docstring)."""

    def serve_ready(self, conn) -> None:
        GThreadWorker.enqueue_req(self, conn)


def _done(result) -> Future:
    """A finished future, as gthread's `finish_request` expects from its pool."""
    fut: Future = Future()
    fut.set_result(result)
    return fut


class LoopWorker(ThreadWorker):
    """gthread with the request served on the event loop's thread (no pool hand-offs)."""

    def serve_ready(self, conn) -> None:
        """Serve the connection's request (read whole by `ReadAhead`) now, then hand the
        connection back to the loop's keep-alive bookkeeping as gthread does when its pool is
        done; a next request already sent (a pipelining client's, or bytes a body drain read
        ahead) comes back through `enqueue_req` and is read whole first too."""
        queue = getattr(self, "_ready", None)
        if queue is not None:  # called back from finish_request below: served by the loop there
            queue.append(conn)
            return
        queue = self._ready = [conn]
        try:
            while queue:  # a loop, not recursion: a client may pipeline any number of requests
                conn = queue.pop(0)
                if not conn.initialized and not conn.data_ready:
                    self.finish_request(conn, _done(_DEFER))
                else:
                    self.finish_request(conn, _done(self.handle(conn)))
        finally:
            self._ready = None
