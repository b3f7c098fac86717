"""The package version, written once: saved models record it (config.json ehrdx_version)."""

__version__ = "0.1.0"
