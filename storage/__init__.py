"""Storage: interfaces in `interfaces`, one backend per subpackage (sqlite, cassandra).

A backend subpackage defines a frozen dataclass `Options` (read from the config section
``[storage.<kind>]``) and ``open_backend(options, data_dir) -> StorageBackend``.
"""
import importlib

from .interfaces import StorageBackend


def backend_module(kind: str):
    return importlib.import_module(f"{__name__}.{kind}")


def open_backend(kind: str, options, data_dir: str) -> StorageBackend:
    """Build backend `kind` from its validated options."""
    return backend_module(kind).open_backend(options, data_dir)
