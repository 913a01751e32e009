"""Where TFF's rounds execute: one local `worker_binary`, or several remote ones.

TFF 0.87's pip wheel ships the C++ runtime only as `worker_binary`, a gRPC executor service
(`tensorflow_federated/cc/simulation/worker_main.cc`); its Python side talks to one with
`RemoteExecutor`. fedkeys builds the execution context itself instead of taking TFF's default:

    one worker (local or HOST:PORT)         several workers (HOST:PORT,HOST:PORT,...)
    SyncExecutionContext                    MergeableCompExecutionContext
      -> RemoteExecutor -> worker_binary      splits the round's clients into one contiguous
                                              share per worker, runs each share's client work and
                                              partial aggregation there (`up_to_merge`), merges
                                              the partials and runs the server update once

A worker trains up to `--max_concurrent_computation_calls` clients at once (its TensorFlow
executor's thread pool) and each client's ops use the intra-op threads TensorFlow reads from
`TF_NUM_INTRAOP_THREADS`; `thread_plan` picks both from the CPUs this process may use
(`RuntimeConfig`). The local worker is started here, with those settings, and reused by every
run of the process; `federated.runtime` stops it at exit. Remote workers are started with
`fedkeys worker --port P` on their machines; an address that does not answer within
`CONNECT_TIMEOUT_S` is a `WorkerUnreachable` error naming it, before any round starts and
when a worker goes away mid-run (TFF alone would retry forever).

A worker executes whatever TensorFlow graph a caller sends it, unauthenticated, and listens on
every interface (`[::]:PORT`, TFF's choice): see docs/decisions.md for where it may run.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from configs.schema import RuntimeConfig
from federated.runtime import install_cleanup, interrupt_then_kill, retire_tff_services

CONNECT_TIMEOUT_S = 20.0  # how long a worker address may take to answer before it is an error
_START_TIMEOUT_S = 60.0  # a freshly started local worker_binary (a 300 MB binary) must answer by then


class WorkerUnreachable(RuntimeError):
    """A TFF worker address did not answer."""


@dataclass(frozen=True)
class ThreadPlan:
    """How one worker spends its CPUs: clients trained at once, and TF threads per client."""

    client_concurrency: int
    intra_op_threads: int


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def thread_plan(cfg: RuntimeConfig, cpus: int | None = None) -> ThreadPlan:
    """The concurrency and intra-op threads `cfg` asks for, 0 meaning "from the machine".

    Auto: one client per CPU, and the CPUs shared out among them (at least one thread each),
    since a client's LSTM ops are too small to keep several cores busy.

    Raises:
        ValueError: a negative setting.
    """
    for name in ("client_concurrency", "intra_op_threads"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"runtime.{name} must be >= 0 (0 = from the machine), got {getattr(cfg, name)}")
    n = available_cpus() if cpus is None else cpus
    concurrency = cfg.client_concurrency or n
    threads = cfg.intra_op_threads or max(1, n // concurrency)
    return ThreadPlan(concurrency, threads)


def parse_workers(spec: str) -> list[str]:
    """"HOST:PORT,HOST:PORT" -> ["HOST:PORT", ...] (an IPv6 host in brackets: "[::1]:8000").

    Raises:
        ValueError: an empty entry, a missing host or port, a port outside [1, 65535], or a
            repeated address.
    """
    out: list[str] = []
    for raw in spec.split(","):
        item = raw.strip()
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"runtime.workers: expected HOST:PORT with a port in [1, 65535], got {item!r}")
        address = f"{host}:{int(port)}"
        if address in out:
            raise ValueError(f"runtime.workers: {address} is listed twice")
        out.append(address)
    return out


def worker_binary() -> str:
    """The path of TFF's `worker_binary`, found without importing tensorflow_federated."""
    spec = importlib.util.find_spec("tensorflow_federated")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        path = os.path.join(root, "data", "worker_binary")
        if os.path.isfile(path):
            return path
    raise RuntimeError(f"no worker_binary under {roots or 'tensorflow_federated (not installed)'}")


def worker_command(port: int, plan: ThreadPlan) -> tuple[list[str], dict[str, str]]:
    """argv and environment of a worker_binary serving on `port` with `plan`."""
    env = dict(os.environ)
    env.update(TF_NUM_INTRAOP_THREADS=str(plan.intra_op_threads), OMP_NUM_THREADS=str(plan.intra_op_threads),
               TF_NUM_INTEROP_THREADS=str(max(2, plan.client_concurrency)), TF_CPP_MIN_LOG_LEVEL="2")
    return [worker_binary(), f"--port={port}", f"--max_concurrent_computation_calls={plan.client_concurrency}"], env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Return once a gRPC connection to `address` is up.

    Raises:
        WorkerUnreachable: no connection within `timeout_s`.
    """
    import grpc

    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        raise WorkerUnreachable(f"TFF worker {address} did not answer within {timeout_s:.0f} s; start one "
                                f"there with `fedkeys worker --port {address.rpartition(':')[2]}`") from None
    finally:
        channel.close()


class WorkerProcess:
    """A worker_binary child process on this machine (the local worker, tests, benchmarks)."""

    def __init__(self, plan: ThreadPlan, port: int = 0, stdout: Any = None) -> None:
        self.plan = plan
        self.port = port or free_port()
        argv, env = worker_command(self.port, plan)
        # its own session, so a Ctrl-C in the terminal reaches this process's exit hook first
        self.process = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stdout, start_new_session=True)

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"

    def wait_ready(self, timeout_s: float = _START_TIMEOUT_S) -> "WorkerProcess":
        try:
            wait_reachable(self.address, timeout_s)
        except WorkerUnreachable:
            code = self.process.poll()
            self.stop()
            raise WorkerUnreachable(f"worker_binary on port {self.port} did not start within {timeout_s:.0f} s"
                                    + (f" (exit status {code})" if code is not None else "")) from None
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGINT, then SIGKILL after `timeout_s`; reaps the child."""
        interrupt_then_kill(self.process, timeout_s)

    def __enter__(self) -> "WorkerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _guarded_stub(address: str) -> Any:
    """TFF's gRPC stub for `address`, turning a lost connection into `WorkerUnreachable`.

    TFF marks UNAVAILABLE as retryable and its contexts retry without limit, so a worker that
    died would hang the run; here a retryable error is re-raised as is only while the address
    still answers.
    """
    import grpc
    from tensorflow_federated.python.core.impl.executors import executors_errors, remote_executor_grpc_stub

    options = [("grpc.max_message_length", 2_000_000_000), ("grpc.max_receive_message_length", 2_000_000_000),
               ("grpc.max_send_message_length", 2_000_000_000)]

    class Stub(remote_executor_grpc_stub.RemoteExecutorGrpcStub):
        pass

    def guard(name: str):
        method = getattr(remote_executor_grpc_stub.RemoteExecutorGrpcStub, name)

        def call(self, request):
            try:
                return method(self, request)
            except executors_errors.RetryableGRPCError:
                wait_reachable(address)  # raises WorkerUnreachable when it is gone
                raise

        return call

    for name in ("get_executor", "create_value", "create_struct", "create_call", "create_selection",
                 "compute", "dispose", "dispose_executor"):
        setattr(Stub, name, guard(name))
    return Stub(grpc.insecure_channel(address, options))


def _executor_factory(address: str) -> Any:
    from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
    from tensorflow_federated.python.core.impl.executors import remote_executor
    from tensorflow_federated.python.core.impl.types import placements

    stub = _guarded_stub(address)

    def stack_fn(cardinalities):
        cardinalities.setdefault(placements.CLIENTS, 0)
        ex = remote_executor.RemoteExecutor(stub)
        ex.set_cardinalities(cardinalities)
        return ex

    return python_executor_stacks.ResourceManagingExecutorFactory(executor_stack_fn=stack_fn)


def execution_context(addresses: list[str]) -> Any:
    """A TFF sync context over the workers at `addresses` (each must answer; see module doc)."""
    from tensorflow_federated.python.core.backends.native import compiler, mergeable_comp_compiler
    from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
    from tensorflow_federated.python.core.impl.execution_contexts import (async_execution_context,
                                                                           mergeable_comp_execution_context,
                                                                           sync_execution_context)

    if not addresses:
        raise ValueError("execution_context needs at least one worker address")
    for a in addresses:
        wait_reachable(a)
    common = dict(compiler_fn=compiler.desugar_and_transform_to_native,
                  transform_args=tensorflow_computation.transform_args,
                  transform_result=tensorflow_computation.transform_result)
    if len(addresses) == 1:
        return sync_execution_context.SyncExecutionContext(executor_fn=_executor_factory(addresses[0]), **common)
    contexts = [async_execution_context.AsyncExecutionContext(executor_fn=_executor_factory(a), **common)
                for a in addresses]
    return mergeable_comp_execution_context.MergeableCompExecutionContext(
        contexts, compiler_fn=mergeable_comp_compiler.compile_to_mergeable_comp_form,
        transform_args=tensorflow_computation.transform_args, transform_result=tensorflow_computation.transform_result)


_local: dict[ThreadPlan, WorkerProcess] = {}  # local workers by plan, reused by later runs
_contexts: dict[tuple[str, ...], Any] = {}  # contexts by addresses (each caches its compiled computations)


def use_runtime(cfg: RuntimeConfig) -> list[str]:
    """Install the execution context `cfg` describes as TFF's default; return its addresses.

    No `workers`: a local worker_binary started with `thread_plan(cfg)` (kept for later runs of
    this process with the same plan). Otherwise the listed workers, each checked first.

    Raises:
        ValueError: a bad setting. WorkerUnreachable: a worker that does not answer.
    """
    from tensorflow_federated.python.core.impl.context_stack import context_stack_impl

    install_cleanup()
    if cfg.workers.strip():
        addresses = tuple(parse_workers(cfg.workers))
    else:
        plan = thread_plan(cfg)
        worker = _local.get(plan)
        if worker is None or worker.process.poll() is not None:
            worker = _local[plan] = WorkerProcess(plan, stdout=sys.stderr).wait_ready()
            _contexts.pop((worker.address,), None)
        addresses = (worker.address,)
    if addresses not in _contexts:
        _contexts[addresses] = execution_context(list(addresses))
    if not any(context_stack_impl.context_stack.current is c for c in _contexts.values()):
        retire_tff_services()  # TFF's own context is replaced: its worker stopped with a bound
    context_stack_impl.context_stack.set_default_context(_contexts[addresses])
    return list(addresses)
