"""fedkeys: model."""
