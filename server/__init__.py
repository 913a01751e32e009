"""fedkeys: server."""
