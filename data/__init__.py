"""fedkeys: data."""
