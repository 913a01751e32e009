"""Run the collector under gunicorn on 127.0.0.1 (what `fedkeys serve` calls).

    python -m server --config server.json [--port 8000] [--workers 2] [--threads 4]

Port 0 (the ServerConfig default) picks a free port; the address is printed and written to
`<state_dir>/server_address` so a device fleet can find it.
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import socket
import sys
from typing import Optional, Sequence

from server.settings import load_settings
from server.worker import THREAD_WORKER_CLASS, WORKER_CLASS

# Where gunicorn's workers keep their heartbeat files (touched twice per request by a gthread
# worker's event loop): a tmpfs, as gunicorn's docs advise, since on a disk-backed /tmp each
# touch dirties an inode through the journal. Left to gunicorn's default where there is none.
SHM = "/dev/shm"


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now. Another process may take it before it is bound again: a server should
    rather be handed `listening_socket(host)` itself, as gunicorn_argv's servers are."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PortUnavailable(RuntimeError):
    """host:port could not be listened on: in use by another process (`in_use`), or not an
    address of this machine."""

    def __init__(self, host: str, port: int, err: OSError) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {err.strerror or err}")
        self.in_use = err.errno == errno.EADDRINUSE


def listening_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A TCP socket bound to (host, port) and listening: the port (a free one for 0) is held from
    here on, with no window for another process to take it between choosing it and gunicorn
    binding it (`gunicorn_argv(config, s.fileno(), ...)`). Not inheritable: hand it to a child with
    Popen's `pass_fds`, or set it inheritable just before an exec.

    Raises:
        PortUnavailable: the port is in use, or the host is not this machine's.
    """
    bare = host.strip("[]")  # "[::1]", as in a URL
    try:
        family, kind, proto, _, address = socket.getaddrinfo(bare or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        s = socket.socket(family, kind, proto)
    except OSError as e:
        raise PortUnavailable(host, port, e) from e
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn sets on its own sockets
        s.bind(address)
        s.listen(2048)  # gunicorn's default backlog
    except OSError as e:
        s.close()
        raise PortUnavailable(host, port, e) from e
    return s


def worker_class_for(threads: int) -> str:
    """gthread for workers of several threads, the loop worker for single-threaded ones (both
    server/worker.py's, which answer gunicorn's own refusals in JSON)."""
    return WORKER_CLASS if threads == 1 else THREAD_WORKER_CLASS


def gunicorn_argv(config_path: str, fd: int, workers: int, threads: int, python: str = sys.executable,
                  worker_class: Optional[str] = None) -> list[str]:
    """The command line that serves the app on the inherited listening socket `fd`
    (listening_socket's; a USR2 re-exec of gunicorn cannot reuse it: stop and start instead).
    No preload: each worker opens its own SQLite connections. Workers of several threads are
    gunicorn's gthread; single-threaded ones serve each request on their event loop's thread
    (server/worker.py); `worker_class` overrides. No control socket: gunicorn's default is one
    path per user, which parallel servers would share."""
    worker_class = worker_class or worker_class_for(threads)
    factory = f"server.app:create_app(config_path={os.path.abspath(config_path)!r}, workers={int(workers)})"
    heartbeat = ["--worker-tmp-dir", SHM] if os.path.isdir(SHM) and os.access(SHM, os.W_OK) else []
    return [python, "-m", "gunicorn", "--bind", f"fd://{int(fd)}", "--workers", str(workers),
            "--worker-class", worker_class, "--threads", str(threads), "--timeout", "120",
            "--graceful-timeout", "10", "--keep-alive", "30", "--no-control-socket", *heartbeat,
            "--access-logfile", "-", factory]


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m server", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="server config JSON (see server/settings.py)")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    s = load_settings(args.config)  # fail here, with a clear message, before gunicorn starts
    host = args.host or s.server.host
    port = args.port if args.port is not None else s.server.port
    sock = listening_socket(host, port)  # held from here, through exec, by gunicorn
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    os.makedirs(s.state_dir, exist_ok=True)
    with open(os.path.join(s.state_dir, "server_address"), "w") as f:
        f.write(f"http://{host}:{port}\n")
    cmd = gunicorn_argv(args.config, sock.fileno(), args.workers or s.server.workers, args.threads or s.server.threads)
    print(f"fedkeys server on http://{host}:{port}: {shlex.join(cmd)}", flush=True)
    os.execv(cmd[0], cmd)
