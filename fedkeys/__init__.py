"""fedkeys: fedkeys."""
