"""federated.runtime.retire_tff_services: TFF's own worker stopped with a bound, never an endless wait.

TFF's `ServiceManager.__del__` sends SIGINT to its worker_binary and waits without a timeout; a
worker that ignores SIGINT hung the suite in that wait. These managers stand in for TFF's (same
class name and module), each holding a real child process.
"""

from __future__ import annotations

import gc
import signal
import subprocess
import sys
import time

from federated.runtime import retire_tff_services

_IGNORES_SIGINT = ("import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('up', flush=True); "
                   "time.sleep(120)")
# SIGINT's default action set explicitly: a child inherits an ignored SIGINT (as under pytest-xdist)
_STOPS_ON_SIGINT = ("import signal, time; signal.signal(signal.SIGINT, signal.SIG_DFL); print('up', flush=True); "
                    "time.sleep(120)")


def _started(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"up\n"  # its signal handler is installed
    return proc


class ServiceManager:  # what TFF's local_cpp_executor_factory keeps: `_process`, a Popen
    def __init__(self, code: str):
        self._process = _started(code)

    def __del__(self):  # TFF's: SIGINT, then an unbounded wait
        if isinstance(self._process, subprocess.Popen):
            self._process.send_signal(signal.SIGINT)
            self._process.wait()


ServiceManager.__module__ = "tensorflow_federated.python.core.impl.executor_stacks.executor_factory"


class NotTFFs:  # another class with a process: left alone
    def __init__(self):
        self._process = _started(_STOPS_ON_SIGINT)


def test_a_worker_that_ignores_sigint_is_killed_after_the_bound_and_its_manager_disarmed(monkeypatch):
    stubborn, polite, other = ServiceManager(_IGNORES_SIGINT), ServiceManager(_STOPS_ON_SIGINT), NotTFFs()
    procs = stubborn._process, polite._process
    try:
        t0 = time.monotonic()
        # the garbage collector's view narrowed to this test's objects: a real TFF worker that another
        # test in this xdist process left running is not this test's to stop
        monkeypatch.setattr(gc, "get_objects", lambda: [stubborn, polite, other])
        stopped = retire_tff_services(timeout_s=1.0)
        elapsed = time.monotonic() - t0
        assert sorted(stopped) == sorted(p.pid for p in procs)
        assert procs[0].returncode == -signal.SIGKILL  # SIGINT ignored: killed after the bound
        assert procs[1].returncode == -signal.SIGINT  # stopped by the interrupt alone
        assert elapsed < 10.0  # one bound for the stubborn worker, not TFF's endless wait
        assert stubborn._process is None and polite._process is None  # __del__ has nothing to wait for
        assert other._process.poll() is None  # not a TFF manager: untouched
        assert retire_tff_services(timeout_s=1.0) == []  # nothing left to stop
        # (their __del__ runs when the test lets go of them, and returns at once)
    finally:
        other._process.kill()
        other._process.wait()
