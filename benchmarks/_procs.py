"""CPU seconds of a process and its children, for benchmarks that run TFF's worker_binary (or
gunicorn) beside themselves: on a shared machine CPU time moves far less than wall time."""

from __future__ import annotations


def tree_cpu_s(proc) -> float:
    """User + system CPU seconds of `proc` (a psutil.Process) and all its live descendants."""
    import psutil

    total = 0.0
    for p in [proc] + proc.children(recursive=True):
        try:
            c = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += c.user + c.system
    return total
