"""Reading an upload body once, into a buffer its thread keeps.

`request.get_data()` read a 5 MB update through about ninety 64 KiB reads of `wsgi.input`, each
copying what gunicorn had buffered ahead (and releasing the GIL to the other threads), and left a
fresh 5 MB `bytes` per request that glibc recycled into ever more heap (worker RSS grew with the
number of uploads). Here the body is read with its Content-Length into one `bytearray` per
thread and handed on as a memoryview: validation decodes it with `np.frombuffer`, the spool
writes it, the running sum adds it, and nothing keeps it past the request.

Under gunicorn (HTTP/1.1 with a Content-Length) the bytes come from the connection's socket with
`recv_into`, after what gunicorn read past the headers; the body reader is then told the body is
consumed, so keep-alive and the next request on the connection work as before. Anywhere else
(Flask's test client, another WSGI server) they come through `wsgi.input.readinto`, or `read`.
"""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.exceptions import ClientDisconnected

try:  # gunicorn's own body reader, for the socket fast path (absent: the WSGI path only)
    from gunicorn.http.body import Body as _GunicornBody
    from gunicorn.http.body import LengthReader as _LengthReader
except ImportError:  # pragma: no cover - gunicorn is a dependency of the server
    _GunicornBody = _LengthReader = None  # type: ignore[assignment, misc]

_STEP = 1 << 20  # largest piece asked of a generic wsgi.input at once


class BodyBuffers:
    """One reusable body buffer per thread, kept when at most `keep_bytes` long (a larger
    body, which cannot be a valid upload of this model's size anyway, gets a buffer of its own
    that is freed with the request)."""

    def __init__(self, keep_bytes: int) -> None:
        self.keep_bytes = keep_bytes
        self._local = threading.local()

    def get(self, n: int) -> memoryview:
        """A writable view of exactly n bytes."""
        if n > self.keep_bytes:
            return memoryview(bytearray(n))
        buf = getattr(self._local, "buf", None)
        if buf is None or len(buf) < n:
            # a new array rather than a resize: a view of the old one may still be referenced
            buf = self._local.buf = bytearray(max(n, min(self.keep_bytes, 1 << 16)))
        return memoryview(buf)[:n]

    def read(self, environ: dict[str, Any], n: int) -> memoryview:
        """The request body of Content-Length n, as a view into this thread's buffer (valid
        until the thread's next request). Raises ClientDisconnected (400) on a short body."""
        view = self.get(n)
        got = _from_gunicorn(environ, view)
        if got is None:
            got = _from_stream(environ["wsgi.input"], view)
        if got < n:
            raise ClientDisconnected(f"the body ended after {got} of its {n} bytes")
        return view


def _from_gunicorn(environ: dict[str, Any], view: memoryview) -> int | None:
    """Read the body straight from gunicorn's socket; None when the request is not one this
    can read that way (nothing is consumed then)."""
    sock = environ.get("gunicorn.socket")
    body = environ.get("wsgi.input")
    if sock is None or _GunicornBody is None or type(body) is not _GunicornBody:
        return None
    reader = body.reader
    unreader = getattr(reader, "unreader", None)
    if (type(reader) is not _LengthReader or reader.length != len(view) or body.buf.tell() != 0
            or not hasattr(unreader, "take_buffered") or not hasattr(unreader, "unread")):
        return None
    n = len(view)
    ahead = unreader.take_buffered()  # bytes gunicorn received after the headers
    got = min(len(ahead), n)
    view[:got] = memoryview(ahead)[:got]
    if len(ahead) > n:
        unreader.unread(ahead[n:])  # a pipelined next request: give it back
    try:
        while got < n:
            r = sock.recv_into(view[got:])
            if r == 0:
                break
            got += r
    except BaseException:
        body.failed = True  # where the next request starts is unknown: gunicorn closes the connection
        raise
    finally:
        reader.length = n - got
    if got < n:
        body.failed = True
    return got


def _from_stream(stream: Any, view: memoryview) -> int:
    """Fill the view from a file-like wsgi.input."""
    n, got = len(view), 0
    readinto = getattr(stream, "readinto", None)
    while got < n:
        if readinto is not None:
            r = readinto(view[got : got + _STEP])
        else:
            data = stream.read(min(n - got, _STEP))
            r = len(data)
            view[got : got + r] = data
        if not r:
            break
        got += r
    return got
