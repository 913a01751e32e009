"""Update ingest throughput of the collector: over HTTP (gunicorn on 127.0.0.1) and the same work
in-process (validation, aggregation, durable storage: `Collector.accept`), for the `default`
(~0.5M float32 parameters) and `gboard` (~1.4M) model sizes (`tiny`, 31 values, shows the fixed cost
of one request), plus the server's memory after 10, 100 and 1,000 accepted updates (flat = the
running sum keeps memory O(model)).

    .venv/bin/python benchmarks/server_ingest.py [--updates 1000] [--sizes default,gboard]
        [--repeats 3] [--workers 2] [--threads 1] [--clients 4] [--client-send raw|sendfile|copy]
        [--worker-class gthread] [--durability process|power] [--dir DIR]

One round of `--updates` reports (goal count = updates, no over-selection) per size, mode and
repeat; the round's publication is inside the timed window. The two modes run `--repeats` times
each, alternating, and their medians are compared (the ratio of each pair is printed too), so a
slower minute of a shared machine does not land on one mode only. The in-process loop hands
`Collector.accept` one body in a reused buffer, rewriting only its header, so it times no body
building; the HTTP server reads each body as it would any phone's (`Collector.receive`: the
header into the thread's buffer, a float32 payload straight into its spool slot). The HTTP
client sends pre-encoded wire headers and the payload over one keep-alive `http.client`
connection per client thread, the payload with `sendfile` from a file that holds it: the load
generator shares the server's two cores and memory bus, which phones never do, and `sendfile`
is the cheapest way for it to put 5 MB on a socket (the kernel hands the file's pages to the
connection; the server's receive still copies them out). `--client-send copy` sends from
memory with `http.client` instead (one more 5 MB copy per upload on the shared machine).
Besides updates/s, CPU milliseconds per update are reported (server worker and client; the
in-process loop), which a machine shared with other jobs disturbs far less than wall time, and
how many of the cores were busy during the HTTP run; the load average before and after is in
the JSON line. Prints a table and ends with one JSON line.

Workers, threads, clients (defaults 2 x 1 and 4, for 2 cores: a process per core, the usual
gunicorn advice). Processes do not share a GIL, and gunicorn's per-request Python, Flask and
authentication cost about as much as the work of a `default` update, so on two cores one
process with two threads leaves a quarter of the CPU idle while its threads wait for each
other's GIL. Single-threaded workers run server/worker.py's `LoopWorker` (the request served on
the event loop's thread); `--worker-class gthread` measures gunicorn's own worker with its one
pool thread instead. With several workers none keeps the running sum in memory: checkpoints are
folded from the spool (each update read back through a kept mapping of its slot) outside the
write lock (docs/decisions.md). Four connections for two single-threaded workers: with three,
whichever worker holds two serves them in turn while the other may idle; with one per worker, a
worker idles while its client reads the answer and starts the next upload, which a collector
serving many phones does not see. `--workers 1 --threads 2 --clients 3` is an earlier setup (and
what a worker that is alone does: the sum in memory, no read-back); `--workers 2 --threads 4
--clients 4` the one before that (issue 6).

Memory: peak RSS (VmHWM) of the worker, and its anonymous and file-backed resident memory
after 10, 100 and 1,000 updates (and the last, with more `--updates`). File-backed is mostly
spool slots mapped: the ones the worker receives into, and with several workers every worker's
slots, which checkpoint builds read back through kept mappings (each slot one float32 update;
the pools hold about `checkpoint_every` plus the uploads in flight and the updates recorded
while a build runs). That is the page cache a spool needs either way, counted in the worker's
RSS because it is mapped; it is bounded by the slot count, and anonymous memory stays flat. A
server thread's body buffer is allocated at its first upload and kept, and the mark after the
last update includes the round's publication (the new model next to the old one).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fedmath import encodings, wire  # noqa: E402
from server.bundle import load_bundle  # noqa: E402
from server.rounds import Collector  # noqa: E402
from server.serve import worker_class_for  # noqa: E402
from server.settings import settings_from_dict  # noqa: E402
from server.testing import MODEL_SHAPES, ServerProcess, config_dict, make_bundle, random_update  # noqa: E402

ELIGIBLE = {"idle": True, "charging": True, "unmetered": True, "num_examples": 16}
MARKS = (10, 100, 1000)


def memory_mb(pid: int) -> dict[str, float]:
    """Peak resident set size (VmHWM) of a process, and its resident anonymous and file-backed
    memory now (RssAnon: heap, sums, buffers; RssFile: mapped files, the spool slots among them)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmHWM", "RssAnon", "RssFile"):
                out[{"VmHWM": "peak", "RssAnon": "anon", "RssFile": "file"}[key]] = int(line.split()[1]) / 1024
    return out


def header_bytes(round_number: int, num_examples: int, upload_id: str) -> bytes:
    """The wire prefix (magic, length, JSON header) for a payload sent right after it."""
    h = wire.UploadHeader(round=round_number, model_version=0, num_examples=num_examples, encoding="float32",
                          upload_id=upload_id)
    return wire.pack(h, b"")


def make_config(root: str, size: str, n: int, durability: str, workers: int, threads: int, database: str = "") -> dict:
    bundle = os.path.join(root, "bundle")
    if not os.path.exists(bundle):
        make_bundle(bundle, MODEL_SHAPES[size])
    return config_dict(bundle, os.path.join(root, "state"),
                       server={"goal_count": n, "over_selection": 1.0, "workers": workers, "threads": threads},
                       privacy={"mode": "device", "clip_norm": 1.0, "noise_multiplier": 0.0},
                       train={"max_examples_per_client": 256},
                       collector={"durability": durability, "rate_limit_per_s": 1e6, "rate_limit_burst": 10**6,
                                  "register_rate_per_s": 1e6, "register_burst": 10**6, "report_deadline_s": 3600,
                                  "database": database})


def bench_inprocess(root: str, size: str, n: int, durability: str, payload: bytes) -> dict:
    cfg = make_config(root, size, n, durability, 1, 1)
    col = Collector(settings_from_dict(cfg), load_bundle(cfg["bundle_dir"]))
    ids = [f"phone-{i}" for i in range(n)]
    for d in ids:
        col.register(d)
        col.checkin(d, ELIGIBLE)
    heads = [header_bytes(0, 16, uuid.uuid4().hex) for _ in ids]
    k = len(heads[0])
    assert all(len(h) == k for h in heads)
    body = bytearray(k + len(payload))  # one body: only its header changes from upload to upload
    body[k:] = payload
    view = memoryview(body)
    rss = {}
    t0, c0 = time.perf_counter(), time.process_time()
    for i, d in enumerate(ids):
        body[:k] = heads[i]
        answer = col.accept(d, 0, view)
        assert answer["accepted"], answer
        if i + 1 in MARKS or i + 1 == n:
            rss[i + 1] = memory_mb(os.getpid())
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert col.status()["model"]["version"] == 1
    return {"updates": n, "seconds": dt, "updates_per_s": n / dt, "cpu_ms_per_update": 1000 * cpu / n,
            "memory_mb": rss}


def server_memory(proc: subprocess.Popen) -> dict[str, float]:
    """memory_mb of the gunicorn worker with the highest peak (each worker holds its own sum)."""
    kids = psutil.Process(proc.pid).children()
    return max((memory_mb(k.pid) for k in kids), key=lambda m: m["peak"], default={})


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User plus system CPU time of these processes (and of their threads)."""
    return sum(sum(p.cpu_times()[:2]) for p in procs)


def bench_http(root: str, size: str, n: int, durability: str, payload: bytes, workers: int, threads: int,
               clients: int, send: str = "raw", worker_class: str | None = None, hosts: int = 1, database: str = "",
               database_pid: int | None = None) -> dict:
    """One round of `n` uploads. `hosts` collectors (each `workers` x `threads`) over one state
    directory and, with several, one PostgreSQL `database` (`database_pid`: its server process,
    whose CPU then counts as the server's); client thread k uploads to host k mod `hosts`."""
    cfg = make_config(root, size, n, durability, workers, threads, database)
    roots = [root] if hosts == 1 else [os.path.join(root, f"host{h}") for h in range(hosts)]
    for r in roots:
        os.makedirs(r, exist_ok=True)
    started = [ServerProcess(r, cfg, workers, threads, worker_class=worker_class).start() for r in roots]
    proc, url = started[0].proc, started[0].url
    ports = [srv.port for srv in started]
    try:
        s = requests.Session()
        tokens = []
        for i in range(n):
            r = s.post(url + "/v1/devices", json={"device_id": f"phone-{i}"})
            tokens.append(r.json()["token"])
        for t in tokens:
            r = s.post(url + "/v1/checkin", json=ELIGIBLE, headers={"Authorization": f"Bearer {t}"})
            assert r.status_code == 200, r.text
        port = started[0].port
        heads = [header_bytes(0, 16, uuid.uuid4().hex) for _ in range(n)]  # encoded before the clock starts
        auth = [f"Bearer {t}" for t in tokens]
        length = str(len(heads[0]) + len(payload))
        raw_heads = [(f"POST /v1/rounds/0/updates HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {a}\r\n"
                      f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n").encode() + h
                     for a, h in zip(auth, heads)]
        local = threading.local()
        payload_path = os.path.join(root, "payload.bin")
        with open(payload_path, "wb") as f:
            f.write(payload)
        opened: list = []
        assigned = [0] * len(ports)  # client threads per host
        per_host = [0] * len(ports)  # accepted uploads per host
        done = [0]
        lock = threading.Lock()
        rss: dict[int, dict[str, float]] = {}
        errors: list[str] = []

        def upload(i: int) -> None:
            if send == "raw":
                status, body = raw_upload(i)
            else:
                status, body = http_client_upload(i)
            if status != 202:
                errors.append(f"{status} {body[:200]!r}")
                return
            with lock:
                done[0] += 1
                k = done[0]
                per_host[getattr(local, "host", 0)] += 1
            if k in MARKS or k == n:
                rss[k] = server_memory(proc)

        def payload_file():
            fobj = getattr(local, "payload_file", None)
            if fobj is None:
                fobj = local.payload_file = open(payload_path, "rb")
                opened.append(fobj)
            return fobj

        def host_port() -> int:
            """This client thread's host: threads are spread over the hosts in turn."""
            if not hasattr(local, "host"):
                with lock:
                    local.host = sum(assigned) % len(ports)
                    assigned[local.host] += 1
            return ports[local.host]

        def raw_upload(i: int) -> tuple[int, bytes]:
            sock = getattr(local, "sock", None)
            if sock is None:
                sock = local.sock = socket.create_connection(("127.0.0.1", host_port()), timeout=120)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client does
                local.reader = sock.makefile("rb")
                opened.append(local.reader)
                opened.append(sock)
            sock.sendall(raw_heads[i])
            sock.sendfile(payload_file(), 0, len(payload))
            return read_response(local.reader)

        def http_client_upload(i: int) -> tuple[int, bytes]:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection("127.0.0.1", host_port(), timeout=120)
            conn.putrequest("POST", "/v1/rounds/0/updates", skip_accept_encoding=True)
            conn.putheader("Authorization", auth[i])
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Length", length)
            conn.endheaders(heads[i])
            if send == "sendfile":  # the payload's pages go to the socket without a copy in this process
                conn.sock.sendfile(payload_file(), 0, len(payload))
            else:
                conn.send(payload)
            resp = conn.getresponse()
            return resp.status, resp.read()

        server_procs = [k for srv in started for k in psutil.Process(srv.proc.pid).children()]
        if database_pid is not None:  # the database server and its backends do part of the server's work
            db = psutil.Process(database_pid)
            server_procs += [db] + db.children()
        me = psutil.Process()
        m0 = psutil.cpu_times()
        t0, s0, c0 = time.perf_counter(), cpu_seconds(server_procs), cpu_seconds([me])
        try:
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(upload, range(n)))
        finally:
            for f in opened:
                if f is not None:
                    f.close()
        dt = time.perf_counter() - t0
        server_cpu, client_cpu = cpu_seconds(server_procs) - s0, cpu_seconds([me]) - c0
        m1 = psutil.cpu_times()
        idle = (m1.idle + m1.iowait) - (m0.idle + m0.iowait)
        total = sum(m1) - sum(m0)
        if errors:
            raise RuntimeError(f"{len(errors)} uploads failed, first: {errors[0]}")
        version = s.get(url + "/v1/model", headers={"Authorization": auth[0]}).json()["version"]
        assert version == 1, version
        return {"updates": n, "seconds": dt, "updates_per_s": n / dt, "body_bytes": int(length),
                "server_cpu_ms_per_update": 1000 * server_cpu / n, "client_cpu_ms_per_update": 1000 * client_cpu / n,
                "cores_busy": (os.cpu_count() or 1) * (1 - idle / total) if total > 0 else float("nan"),
                "memory_mb": rss, "workers": workers, "threads": threads,
                "worker_class": worker_class or worker_class_for(threads),
                "clients": clients, "client_send": send, "hosts": hosts, "uploads_per_host": per_host}
    finally:
        for srv in started:
            srv.stop()


def read_response(reader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response with a Content-Length, from a buffered reader of
    a keep-alive connection (the `raw` load generator: no email-parser headers per answer)."""
    status_line = reader.readline()
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise RuntimeError(f"not an HTTP response: {status_line[:100]!r}")
    length = None
    while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise RuntimeError("the server answered without a Content-Length")
    return int(parts[1]), reader.read(length)


def mark_points(n: int) -> list[int]:
    """10, 100 and 1,000 updates, and the last one when there are more."""
    return [k for k in MARKS if k <= n] + ([n] if n > MARKS[-1] else [])


def marks(run: dict, key: str) -> str:
    return " / ".join(f"{run['memory_mb'].get(k, {}).get(key, float('nan')):.0f}" for k in mark_points(run["updates"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="default,gboard")
    p.add_argument("--updates", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3,
                   help="in-process and HTTP runs, alternating; the medians are compared")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (see the docstring for the choice)")
    p.add_argument("--threads", type=int, default=1, help="threads per worker")
    p.add_argument("--clients", type=int, default=4, help="client threads, one keep-alive connection each")
    p.add_argument("--client-send", default="raw", choices=["raw", "sendfile", "copy"],
                   help="how the load generator puts the payload on its socket (see the docstring)")
    p.add_argument("--worker-class", default=None,
                   help="gunicorn worker class (default: server/worker.py's LoopWorker for one thread, else gthread)")
    p.add_argument("--durability", default="process", choices=["process", "power"])
    p.add_argument("--dir", default=None, help="where state goes (default: a temp dir on the default disk)")
    args = p.parse_args()
    results = {}
    load_before = os.getloadavg()
    base = tempfile.mkdtemp(prefix="fedkeys-ingest-", dir=args.dir)
    try:
        for size in args.sizes.split(","):
            shapes = [s for _, s in MODEL_SHAPES[size]]
            params = sum(int(np.prod(s)) for s in shapes)
            payload = encodings.encode_float32(random_update(shapes, 0.9, np.random.default_rng(0)))
            runs: dict[str, list[dict]] = {"inprocess": [], "http": []}
            for r in range(args.repeats):  # alternating, so a slower minute of the machine hits both
                runs["inprocess"].append(bench_inprocess(os.path.join(base, f"{size}-inproc-{r}"), size, args.updates,
                                                         args.durability, payload))
                runs["http"].append(bench_http(os.path.join(base, f"{size}-http-{r}"), size, args.updates,
                                               args.durability, payload, args.workers, args.threads, args.clients,
                                               args.client_send, args.worker_class))
            med = {mode: statistics.median(x["updates_per_s"] for x in rs) for mode, rs in runs.items()}
            ratio = med["http"] / med["inprocess"]
            pairs = [h["updates_per_s"] / i["updates_per_s"] for h, i in zip(runs["http"], runs["inprocess"])]
            results[size] = {"params": params, "http_updates_per_s": med["http"],
                             "inprocess_updates_per_s": med["inprocess"], "ratio": ratio, "ratio_per_repeat": pairs,
                             "runs": runs}
            over_http, inproc = runs["http"][-1], runs["inprocess"][-1]
            print(f"{size:8s} {params:>9,d} params  HTTP {med['http']:7.1f} upd/s   in-process {med['inprocess']:7.1f} "
                  f"upd/s   ratio {ratio:.2f}   (medians of {args.repeats}; ratio per repeat "
                  + ", ".join(f"{x:.2f}" for x in pairs) + ")")
            print(f"{'':8s} last repeat's server worker after {'/'.join(map(str, mark_points(args.updates)))} updates: peak RSS {marks(over_http, 'peak')} MB, "
                  f"of it anonymous {marks(over_http, 'anon')} MB and file-backed {marks(over_http, 'file')} MB (HTTP); "
                  f"peak {marks(inproc, 'peak')}, anonymous {marks(inproc, 'anon')} MB (in-process)")
            print(f"{'':8s} CPU per update: HTTP {over_http['server_cpu_ms_per_update']:.2f} ms server + "
                  f"{over_http['client_cpu_ms_per_update']:.2f} ms client ({over_http['cores_busy']:.2f} of "
                  f"{os.cpu_count()} cores busy), in-process {inproc['cpu_ms_per_update']:.2f} ms")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    summary = {"benchmark": "server_ingest", "cpus": os.cpu_count(), "python": platform.python_version(),
               "durability": args.durability, "updates": args.updates, "repeats": args.repeats,
               "workers": args.workers, "threads": args.threads, "clients": args.clients,
               "client_send": args.client_send,
               "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "results": results}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
