"""fedkeys: device_sim."""
