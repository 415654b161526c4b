"""Beam pipelines and the `emer` command line."""

__version__ = "0.1.0"
