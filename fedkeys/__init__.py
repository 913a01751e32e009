"""fedkeys: Gboard-style federated learning of keyboard next-word prediction, end to end.

The `fedkeys` command (fedkeys/cli.py) drives the stages; each stage lives in its own package.
"""

__version__ = "0.1.0"
