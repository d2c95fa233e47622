"""Storage: interfaces in `interfaces`, one backend per subpackage (sqlite, cassandra)."""
import importlib

from .interfaces import StorageBackend


def open_backend(kind: str, options) -> StorageBackend:
    """Load backend `kind` (a subpackage name) and build it from its config options."""
    module = importlib.import_module(f"{__name__}.{kind}")
    return module.open_backend(options)
