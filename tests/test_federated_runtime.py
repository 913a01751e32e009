"""A process that ran TFF leaves no worker_binary behind (so captured output pipes close)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

CHILD = """
from federated.runtime import install_cleanup
install_cleanup()
import tensorflow as tf
import tensorflow_federated as tff

@tff.tensorflow.computation(tf.int32)
def add_one(x):
    return x + 1

print("result", add_one(41))
"""


def test_tff_worker_is_stopped_at_exit():
    # Without the cleanup the orphaned worker keeps the captured stdout open and run() times out.
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "result 42" in out.stdout
