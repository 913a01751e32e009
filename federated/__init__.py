"""fedkeys: federated."""
