"""The tool's version, from the installed distribution's metadata (one place: pyproject.toml)."""

from importlib import metadata

try:
    __version__ = metadata.version("emer-builder")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
