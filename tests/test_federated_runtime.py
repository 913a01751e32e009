"""A process that ran TFF leaves no worker_binary behind (so captured output pipes close)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

SWITCH = """
import gc

from federated.runtime import _own_workers, install_cleanup
install_cleanup()
import tensorflow as tf
import tensorflow_federated as tff
from configs import resolve
from federated.workers import use_runtime

@tff.tensorflow.computation(tf.int32)
def add_one(x):
    return x + 1

print("tff", add_one(1))  # TFF's own context starts its worker_binary
# held here, so only use_runtime (not TFF's __del__, which cannot run while they are referenced) can stop it
managers = [o for o in gc.get_objects() if type(o).__name__ == "ServiceManager"]
before = set(_own_workers())
use_runtime(resolve("tiny").runtime)  # replaces that context: its worker stopped with a bound
after = set(_own_workers())
print("managers", len(managers), "disarmed", all(m._process is None for m in managers))
print("retired", len(before - after), "kept", len(before & after), "ours", add_one(2))
"""


def test_replacing_tffs_own_context_stops_its_worker_and_exit_stops_ours():
    # TFF's ServiceManager.__del__ would SIGINT its worker and wait without a bound (a hang seen
    # in the suite); use_runtime stops that worker itself, and the new context computes. At exit
    # the cleanup stops the worker use_runtime started: left orphaned it would keep the captured
    # stdout open and run() would time out (one child for both, as each imports TFF: ~20 s).
    out = subprocess.run([sys.executable, "-c", SWITCH], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tff 2" in out.stdout and "managers 1 disarmed True" in out.stdout, out.stdout
    assert "retired 1 kept 0 ours 3" in out.stdout, out.stdout
