"""Requests read whole on the worker's event loop before anything serves them (issue 18, finding 3).

gunicorn's gthread worker hands a connection to a pool thread as soon as its first bytes arrive,
and that thread then blocks on the socket until the request is in: four clients that stall
mid-headers or mid-body held all four threads of a worker, and every other request waited
(`GET /v1/status` timed out for minutes). Here the event loop reads each request without
blocking, as a buffering reverse proxy would, and hands the connection on only once the whole
request is in memory; a client that stalls holds a buffer and a poller entry, never a thread:

    readable ──> recv what is there (headers: 64 KiB at a time); the rest of a body of known
       │         length up to IN_KERNEL stays in the kernel (SO_RCVLOWAT: woken once it is all
       │         there, then read by the app straight to its spool slot, no copy added); a
       │         longer one is received into a buffer grown as bytes arrive
       ├─ incomplete ──> back on the poller, until the request's deadline: 408, closed
       └─ complete ────> the socket wrapped so its reads return the buffered bytes first
                         (`Prefetched`), then served as before (pool thread or the loop)

The deadline is READ_GRACE_S plus one second per MIN_RATE bytes of the declared (or, chunked,
received) size, so a slow honest upload finishes and a trickle is cut. Bodies declared longer
than MAX_BODY, and any request once the worker holds MAX_BUFFERED of unfinished ones, go on at
once as before (the app refuses bodies over `server.max_body_bytes` without reading them).
Chunked bodies are buffered too, their framing scanned only to find the end; anything malformed
is handed on for gunicorn to refuse.
"""

from __future__ import annotations

import fcntl
import json
import selectors
import socket
import struct
import termios
import time
from functools import partial
from typing import Any

READ_GRACE_S = 30.0  # every request gets this long for its headers and body ...
MIN_RATE = 32 * 1024  # ... plus a second per MIN_RATE bytes of its body
MAX_HEADER_BYTES = 64 * 1024  # more without the end of the headers: gunicorn refuses it (431)
MAX_BODY = 64 * 1024 * 1024  # the collector's default server.max_body_bytes
MAX_BUFFERED = 256 * 1024 * 1024  # unfinished requests a worker holds in memory before it stops buffering
GROW = 1 << 20
LOW_WATER = 256 * 1024  # body bytes to wait for before the event loop reads again


def _kernel_room() -> int:
    """Half the largest TCP receive buffer the kernel grants (SO_RCVLOWAT grows it to twice the mark)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_rmem") as f:
            return int(f.read().split()[2]) // 2
    except (OSError, ValueError, IndexError):
        return 0


IN_KERNEL = min(8 * 1024 * 1024, _kernel_room())  # a body rest this short is left in the kernel until all there
HANDOVER, HEADERS, CHUNKED = 0, -1, -2  # `conn.need` besides a total byte count


def _chunked_end(data: bytearray, pos: int) -> tuple[int, int]:
    """(end of the chunked body, or HANDOVER for malformed framing, or CHUNKED while it is not
    all in; where to resume the scan) for chunks starting at data[pos:]."""
    while True:
        eol = data.find(b"\r\n", pos, pos + 1024)
        if eol < 0:
            return (HANDOVER if len(data) - pos > 1024 else CHUNKED), pos
        try:
            size = int(bytes(data[pos:eol]).split(b";")[0].strip(), 16)
        except ValueError:
            return HANDOVER, pos
        if size < 0:
            return HANDOVER, pos
        if size == 0:  # the last chunk, then trailer lines up to an empty one
            k = eol + 2
            while True:
                e = data.find(b"\r\n", k, k + 8192)
                if e < 0:
                    return (HANDOVER if len(data) - k > 8192 else CHUNKED), pos
                if e == k:
                    return e + 2, pos
                k = e + 2
        nxt = eol + 2 + size + 2
        if nxt > len(data):
            return CHUNKED, pos
        pos = nxt


def _head(data: bytearray) -> tuple[int, int, bool]:
    """(end of the headers or -1, Content-Length or -1, chunked) of the request in `data`."""
    end = data.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES + 4)
    if end < 0:
        return -1, -1, False
    length, chunked = -1, False
    for line in bytes(data[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            chunked = True
        elif name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                length = MAX_BODY + 1  # gunicorn refuses it
    return end + 4, length, chunked


def _available(sock: Any) -> int:
    """Bytes waiting in the socket's receive buffer (FIONREAD)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0


def _low_water(sock: Any, nbytes: int) -> None:
    """SO_RCVLOWAT: the poller reports the socket readable once this many bytes are in."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, max(1, nbytes))
    except OSError:
        pass


class Prefetched:
    """A connection's socket whose reads return the bytes the event loop buffered first; every
    other attribute is the socket's own (gunicorn's parser and server/body.py read through it)."""

    def __init__(self, sock: Any) -> None:
        self.raw = sock
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytearray) -> None:
        self._buf, self._pos = bytearray(self.take_pending()) + data if self.pending() else data, 0

    def pending(self) -> int:
        return len(self._buf) - self._pos

    def take_pending(self) -> bytes:
        out = bytes(self._buf[self._pos:])
        self._buf, self._pos = bytearray(), 0
        return out

    def recv(self, n: int, *flags: Any) -> bytes:
        if self._pos < len(self._buf):
            out = bytes(self._buf[self._pos:self._pos + n])
            self._pos += len(out)
            return out
        return self.raw.recv(n, *flags)

    def recv_into(self, view: Any, n: int = 0, *flags: Any) -> int:
        if self._pos < len(self._buf):
            n = min(n or len(view), len(view), len(self._buf) - self._pos)
            view[:n] = memoryview(self._buf)[self._pos:self._pos + n]
            self._pos += n
            return n
        return self.raw.recv_into(view, n, *flags)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class ReadAhead:
    """Mixin for gthread-based workers: `enqueue_req` buffers, then calls `serve_ready(conn)`."""

    def serve_ready(self, conn: Any) -> None:  # pragma: no cover - the worker classes define it
        raise NotImplementedError

    def enqueue_req(self, conn: Any) -> None:
        if not isinstance(conn.sock, Prefetched):
            conn.sock = Prefetched(conn.sock)
        sock = conn.sock.raw
        pre = getattr(conn, "prebuf", None)
        if pre is None:
            pre = conn.prebuf = bytearray()
            conn.need, conn.body_at, conn.scan, conn.in_kernel = HEADERS, 0, 0, 0
            conn.woken = conn.no_kernel = False
            conn.started = time.monotonic()
            if conn.parser is not None:  # what the last request's parser or body drain read ahead
                pre += conn.parser.unreader.take_buffered()
            pre += conn.sock.take_pending()
            conn.fill = len(pre)
            self._update_need(conn, pre)
        before = conn.fill
        eof = self._receive(conn, sock, pre)
        self.buffered_bytes = getattr(self, "buffered_bytes", 0) + conn.fill - before
        if eof and not conn.fill:
            self._drop(conn)
            return
        if not eof and conn.need != HANDOVER and (conn.need < 0 or conn.fill + conn.in_kernel < conn.need) \
                and self.buffered_bytes <= MAX_BUFFERED:
            if conn.need > 0:  # wake for the whole rest (in the kernel), or a useful part of it
                rest = conn.need - conn.fill
                _low_water(sock, rest if rest <= IN_KERNEL and not conn.no_kernel else min(rest, LOW_WATER))
            if conn not in self._waiting_set():  # stays on the poller until the request is in
                self._waiting_set().add(conn)
                self.poller.register(sock, selectors.EVENT_READ, partial(self._readable, conn))
            return
        self._unpoll(conn)
        _low_water(sock, 1)
        self.buffered_bytes -= conn.fill
        del pre[conn.fill:]
        conn.prebuf = None
        conn.sock.feed(pre)
        sock.setblocking(True)
        conn.data_ready = True
        self.serve_ready(conn)

    def _receive(self, conn: Any, sock: Any, pre: bytearray) -> bool:
        """Read what the socket has without blocking into pre[:conn.fill]; True at the end of the
        stream. A body of known length is received straight into the buffer, which grows to at
        most twice what has arrived (a declared length alone costs no memory)."""
        sock.setblocking(False)
        try:
            while conn.need != HANDOVER and (conn.need < 0 or conn.fill < conn.need):
                if conn.need > 0 and not conn.no_kernel and conn.need - conn.fill <= IN_KERNEL:
                    # the rest of a body this short waits in the kernel's receive buffer (the poller
                    # reports it once all of it is there: SO_RCVLOWAT), so the server reads it
                    # from the socket straight to where it goes, as without read-ahead; woken with
                    # less there (the peer closed, or the kernel kept a lower mark): read it here
                    if _available(sock) >= conn.need - conn.fill:
                        conn.in_kernel = conn.need - conn.fill
                        return False
                    if not conn.woken:
                        return False
                    conn.no_kernel = True
                if conn.need > 0:
                    if conn.fill == len(pre):
                        pre.extend(bytes(min(conn.need, max(2 * conn.fill, conn.fill + GROW)) - conn.fill))
                    with memoryview(pre) as view:
                        r = sock.recv_into(view[conn.fill:conn.need])
                    if r == 0:
                        return True
                    conn.fill += r
                    continue
                chunk = sock.recv(1 << 16)
                if not chunk:
                    return True
                pre += chunk
                conn.fill = len(pre)
                self._update_need(conn, pre)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return True
        return False

    @staticmethod
    def _update_need(conn: Any, pre: bytearray) -> None:
        if conn.need == HEADERS:
            end, length, chunked = _head(pre)
            if end < 0:
                conn.need = HANDOVER if len(pre) > MAX_HEADER_BYTES else HEADERS
                return
            conn.body_at = conn.scan = end
            if chunked:
                conn.need = CHUNKED
            elif length > MAX_BODY:
                conn.need = HANDOVER
            else:
                conn.need = end + max(length, 0)
        if conn.need == CHUNKED:
            end, conn.scan = _chunked_end(pre, conn.scan)
            conn.need = end if end != CHUNKED else CHUNKED
            if len(pre) - conn.body_at > MAX_BODY:
                conn.need = HANDOVER

    def _readable(self, conn: Any, sock: Any) -> None:
        conn.woken = True
        self.enqueue_req(conn)

    def _unpoll(self, conn: Any) -> None:
        if conn in self._waiting_set():
            self._waiting_set().discard(conn)
            try:
                self.poller.unregister(conn.sock.raw)
            except (OSError, KeyError, ValueError):
                pass

    def _waiting_set(self) -> set:
        waiting = getattr(self, "_reading", None)
        if waiting is None:
            waiting = self._reading = set()
        return waiting

    def _deadline(self, conn: Any) -> float:
        size = conn.need if conn.need > 0 else conn.fill
        return conn.started + READ_GRACE_S + size / MIN_RATE

    def _drop(self, conn: Any) -> None:
        self._unpoll(conn)
        if conn.prebuf is not None:
            self.buffered_bytes -= conn.fill
        conn.prebuf = None
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """gthread's sweep of idle new connections, and of requests past their read deadline
        (answered 408 in the API's JSON, then closed)."""
        super().murder_pending()  # type: ignore[misc]
        now = time.monotonic()
        for conn in [c for c in self._waiting_set() if self._deadline(c) < now]:
            self._unpoll(conn)
            body = json.dumps({"error": "request_timeout", "detail": "the request did not arrive in time "
                               f"({READ_GRACE_S:.0f} s plus 1 s per {MIN_RATE // 1024} KiB)"}).encode()
            try:
                conn.sock.raw.send(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: "
                                   b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self._drop(conn)

    def finish_request(self, conn: Any, fs: Any) -> None:
        """gthread's, with bytes of a next request that sit in the wrapper (not the socket, so the
        poller would never report them) handed back to the parser, which gthread checks."""
        if isinstance(conn.sock, Prefetched) and conn.sock.pending() and conn.parser is not None:
            unreader = conn.parser.unreader
            unreader.unread(unreader.take_buffered() + conn.sock.take_pending())
        super().finish_request(conn, fs)  # type: ignore[misc]
