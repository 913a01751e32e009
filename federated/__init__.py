"""fedkeys: federated — the TFF simulation, and the only package that imports tensorflow_federated.

- `federated.sampling`: which clients train in which round (pure; no TF; shared with device_sim).
- `federated.tff_model`: `model.nwp.build_model` wrapped for tff.learning.
- `federated.algorithms`: FedAvg, FedAvgM, FedAdam, FedYogi, FedProx processes.
- `federated.optimizers`: Nesterov-momentum server SGD in TFF's optimizer interface.
- `federated.privacy`: DP settings check, TFF DP aggregators, epsilon.
- `federated.checkpoint`: resumable state.
- `federated.runtime`: stops TFF's worker process at exit.
- `federated.training`: `run_federated(cfg, data, out_dir)`, the driver.

Importing `federated` itself loads nothing heavy, so `federated.sampling` stays TensorFlow-free.
"""
