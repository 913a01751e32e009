"""The algorithm core: what a federated round computes, with no transport in it.

Pure numpy over `fedmath`'s kernels; never imports TensorFlow, Flask, SQLite or HTTP, so the
collector (server/), the in-process path and tests run the same code (docs/architecture.md).

- messages.py    Plan, ClientUpdate, Aggregate, Refusal
- aggregator.py  the aggregation-rule interface and registry; mean.py the linear rules
- robust.py, norm_bound.py  Byzantine-robust rules and TFF's norm bounding
- anomaly.py     anomaly scores and the screened rule; reputation.py per-device reputation
- dp.py          DP wrappers around a rule (server-side clipping, central Gaussian noise)
- optimizers.py  server optimizers with TFF's maths; schedules.py their learning-rate schedules
- policy.py      round policies (synchronous rounds); buffered.py FedBuff's buffered asynchronous policy
- memory_server.py  either policy run in memory on a caller's clock (simulations)
- algorithm.py   the composition a run's config describes
"""

from fedcore.algorithm import ALGORITHMS, ServerAlgorithm, build
from fedcore.messages import Aggregate, ClientUpdate, Plan, Refusal
from fedcore.buffered import BufferedAsync, StalenessWeight
from fedcore.policy import SyncRounds

__all__ = ["ALGORITHMS", "Aggregate", "BufferedAsync", "ClientUpdate", "Plan", "Refusal", "ServerAlgorithm",
           "StalenessWeight", "SyncRounds", "build"]
