"""The package version (one place; written into run folders and checkpoints)."""

__version__ = "0.1.0"
