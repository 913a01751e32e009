"""Serve TFF rounds to a `fedkeys train --workers HOST:PORT,...` on another machine.

`fedkeys worker --port P` replaces itself with TFF's `worker_binary` (a gRPC executor service)
listening on port P of every interface, training up to `runtime.client_concurrency` clients at
once with `runtime.intra_op_threads` TensorFlow threads each (0: from this machine's CPUs;
`--set runtime.client_concurrency=N`). Stopping it (Ctrl-C, SIGTERM) stops the service: nothing
is left running. It runs any TensorFlow graph a caller sends, unauthenticated: run it only where
nobody but the trainer can reach the port (docs/decisions.md).
"""

from __future__ import annotations

import argparse
import os
import sys

from fedkeys.commands.common import run_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, required=True, help="TCP port to serve on (all interfaces)")


def run(args: argparse.Namespace) -> int:
    from federated.workers import thread_plan, worker_command

    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in [1, 65535], got {args.port}")
    plan = thread_plan(run_config(args).runtime)
    argv, env = worker_command(args.port, plan)
    print(f"fedkeys worker: TFF worker_binary on port {args.port}, {plan.client_concurrency} clients at once, "
          f"{plan.intra_op_threads} TensorFlow threads each", file=sys.stderr, flush=True)
    os.execve(argv[0], argv, env)  # the worker is this process: stopping it leaves nothing behind
    return 1  # not reached
