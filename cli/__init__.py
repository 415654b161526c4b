"""The `emer` command line: a thin layer over importable functions."""
