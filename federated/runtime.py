"""Clean up TFF's local C++ executor so a finished run leaves no process behind.

TFF 0.87's default execution context starts `worker_binary` (a gRPC executor service) as a child
process, with our stdout/stderr, and stops it only from a `__del__` that does not run at
interpreter exit. Left alone it outlives the run (re-parented to init), keeps using CPU and keeps
a captured stdout pipe open, so `subprocess.run(["fedkeys", "train", ...], capture_output=True)`
would hang. `install_cleanup()` registers an atexit hook (and, when nothing else handles
SIGTERM, a handler that exits through it) that interrupts exactly this process's own
`worker_binary` children, by pid.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time

_installed = False


def _own_workers() -> list[int]:
    me = os.getpid()
    out = []
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != me:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if b"worker_binary" in cmd:
            out.append(int(name))
    return out


def stop_workers(timeout_s: float = 5.0, rescans: int = 3) -> list[int]:
    """SIGINT (then SIGKILL after `timeout_s`) this process's worker_binary children; return their pids.

    Rescans a few times: when the run is interrupted mid-round, TFF's executor thread may notice
    the stopped worker and start a new one while the interpreter is shutting down.
    """
    stopped: list[int] = []
    for i in range(rescans + 1):
        pids = _stop_once(timeout_s)
        stopped += pids
        if not pids and i > 0:
            break
        time.sleep(0.3)
    return stopped


def _stop_once(timeout_s: float) -> list[int]:
    pids = _own_workers()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.05)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    return pids


def interrupt_then_kill(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGINT a still-running `subprocess.Popen`, give it `timeout_s` to exit, then SIGKILL; reaps it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def retire_tff_services(timeout_s: float = 10.0) -> list[int]:
    """Stop the worker_binary of each of TFF's own local-context service managers, with a bound;
    return their pids.

    TFF's `ServiceManager.__del__` (executor_factory.py) stops its worker with SIGINT and then
    waits without a timeout; it runs when another default context replaces TFF's. A worker that
    does not exit on SIGINT (seen in the suite under load: the test hung for 20 minutes in that
    wait) then hangs the process. Here each such worker gets SIGINT, `timeout_s` to exit, then
    SIGKILL, and its manager is left with nothing for `__del__` to do.
    """
    import gc

    stopped = []
    for obj in gc.get_objects():
        cls = type(obj)
        if cls.__name__ != "ServiceManager" or not cls.__module__.endswith("executor_factory"):
            continue
        proc = getattr(obj, "_process", None)
        if not isinstance(proc, subprocess.Popen):
            continue
        interrupt_then_kill(proc, timeout_s)
        obj._process = None
        stopped.append(proc.pid)
    return stopped


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # runs the atexit hook, unlike the default action


def install_cleanup() -> None:
    """Register the exit hook once per process."""
    global _installed
    if _installed:
        return
    atexit.register(stop_workers)
    try:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
    except ValueError:  # not the main thread: atexit alone
        pass
    _installed = True
