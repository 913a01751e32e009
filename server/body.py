"""Reading an upload body front to back, into buffers the server keeps.

`request.get_data()` read a 5 MB update through about ninety 64 KiB reads of `wsgi.input`, each
copying what gunicorn had buffered ahead (and releasing the GIL to the other threads), and left a
fresh 5 MB `bytes` per request that glibc recycled into ever more heap (worker RSS grew with the
number of uploads). Here a body of known Content-Length is a `BodyStream`: `readinto(view)` fills
exactly the view it is given, so the collector decides where each part of the body lands: the
wire header in the thread's `BodyBuffers` buffer, and a float32 payload straight in its spool
file's pages (`Collector.receive`), one copy instead of a read into a buffer and a write out of it.

Under gunicorn (HTTP/1.1 with a Content-Length) the bytes come from the connection's socket with
`recv_into`, after what gunicorn read past the headers; gunicorn's body reader is kept told how
much of the body is left, so keep-alive and the next request on the connection work as before
(what the app leaves unread, gunicorn reads and drops before the next request). Anywhere else
(Flask's test client, another WSGI server) the bytes come through `wsgi.input.readinto`, or `read`.

A body without a Content-Length (`Transfer-Encoding: chunked`) is read whole by werkzeug
(`read_whole`), which enforces the request's size limit. gunicorn parses the chunk framing as
the body is read, inside the app: a malformed chunk-size line, extension, terminator or trailer
is an answer of 400 `bad_framing` here, and gunicorn closes the connection after it (its body
reader marks itself failed), since where the next request would start is unknown.
"""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.exceptions import ClientDisconnected

from fedcore.messages import Refusal

try:  # gunicorn's own body reader, for the socket fast path (absent: the WSGI path only)
    from gunicorn.http.body import Body as _GunicornBody
    from gunicorn.http.body import LengthReader as _LengthReader
    from gunicorn.http.errors import ParseException as _FramingError
except ImportError:  # pragma: no cover - gunicorn is a dependency of the server
    _GunicornBody = _LengthReader = None  # type: ignore[assignment, misc]

    class _FramingError(Exception):  # type: ignore[no-redef]
        """Stands in for gunicorn's parse errors where gunicorn is absent (never raised)."""

_STEP = 1 << 20  # largest piece asked of a generic wsgi.input at once
_DETAIL_CHARS = 200  # of the server's description of a framing error, echoed to the client


def framing_error(e: Exception) -> Refusal:
    """The answer to a body whose transfer framing (chunk sizes, extensions, terminators,
    trailers) the WSGI server refused while the app read it."""
    what = str(e)
    if len(what) > _DETAIL_CHARS:
        what = what[:_DETAIL_CHARS] + "..."
    return Refusal("bad_framing", f"the request body's chunked framing is malformed: {what}")


def read_whole(request: Any) -> bytes:
    """The whole body of a werkzeug request, through werkzeug's size limit (413 past
    `request.max_content_length`); 400 `bad_framing` for malformed chunked framing."""
    try:
        return request.get_data(cache=False)
    except _FramingError as e:
        raise framing_error(e) from None


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

    def stream(self, environ: dict[str, Any], n: int) -> "BodyStream":
        """The request body of Content-Length n, to be read front to back."""
        return BodyStream(environ, n, self)


class BodyStream:
    """A request body of known length, read front to back: `readinto(view)` fills the whole
    view or raises ClientDisconnected (400: the client sent less than its Content-Length)."""

    def __init__(self, environ: dict[str, Any], length: int, buffers: BodyBuffers) -> None:
        self.length = length
        self.consumed = 0
        self.buffers = buffers
        self._buffer: memoryview | None = None
        self._sock = self._reader = self._body = None
        self._input = environ.get("wsgi.input")
        sock, body = environ.get("gunicorn.socket"), self._input
        if sock is None or _GunicornBody is None or type(body) is not _GunicornBody:
            return
        reader = body.reader
        unreader = getattr(reader, "unreader", None)
        if (type(reader) is not _LengthReader or reader.length != length or body.buf.tell() != 0
                or not hasattr(unreader, "take_buffered") or not hasattr(unreader, "unread")):
            return
        self._sock, self._reader, self._body = sock, reader, body

    def readinto(self, view: memoryview) -> None:
        n = len(view)
        if n > self.length - self.consumed:
            raise ValueError(f"asked for {n} bytes with {self.length - self.consumed} of the body left")
        got = self._fill(view)
        self.consumed += got
        if got < n:
            raise ClientDisconnected(f"the body ended after {self.consumed} of its {self.length} bytes")

    def buffer(self) -> memoryview:
        """Where the body goes when it is read whole: the thread's buffer (or, for a body
        longer than any upload, one of its own), `length` bytes."""
        if self._buffer is None:
            self._buffer = self.buffers.get(self.length)
        return self._buffer

    def read_all(self) -> memoryview:
        """The whole body in `buffer()`, reading what has not been read yet (what has, the
        caller read into the buffer's start)."""
        view = self.buffer()
        self.readinto(view[self.consumed :])
        return view

    def _fill(self, view: memoryview) -> int:
        if self._sock is None:
            try:
                return _from_stream(self._input, view)
            except _FramingError as e:  # a server that decodes chunks under a Content-Length
                raise framing_error(e) from None
        n, left = len(view), self.length - self.consumed
        unreader = self._reader.unreader
        ahead = unreader.take_buffered()  # what gunicorn (or the last call) received past this point
        if len(ahead) > left:
            unreader.unread(ahead[left:])  # a pipelined next request: give it back
        got = min(len(ahead), n)
        view[:got] = memoryview(ahead)[:got]
        if len(ahead) > got:
            unreader.unread(ahead[got:left])  # the body's next bytes, for the next call
        try:
            while got < n:
                r = self._sock.recv_into(view[got:])
                if r == 0:
                    break
                got += r
        except BaseException:
            self._body.failed = True  # where the next request starts is unknown: gunicorn closes the connection
            raise
        finally:
            self._reader.length = left - got  # what gunicorn reads and drops before the next request
        if got < n:
            self._body.failed = True
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
