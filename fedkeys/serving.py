"""Kept for callers written before the launcher moved: use `server.process` instead."""

from server.process import ServerProcess, write_server_config  # noqa: F401
from server.serve import free_port  # noqa: F401
