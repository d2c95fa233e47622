"""Storage: interfaces in `interfaces`, one backend per subpackage (sqlite, postgresql,
cassandra, memory).

A backend subpackage defines a frozen dataclass `Options` (read from the config section
``[storage.<kind>]``) and ``open_backend(options, data_dir) -> StorageBackend``.
"""

import importlib

from .interfaces import StorageBackend


class StorageUnavailable(RuntimeError):
    """A backend cannot be used as configured: unreachable, or its schema is missing
    (the message says what to do)."""


def domain_of(jid: str) -> str:
    """The domain of a bare JID (the JID itself when it has no local part): what
    accounts are listed by, and rooms by their service."""
    return jid.partition("@")[2] or jid


def backend_module(kind: str):
    return importlib.import_module(f"{__name__}.{kind}")


def open_backend(kind: str, options, data_dir: str) -> StorageBackend:
    """Build backend `kind` from its validated options."""
    return backend_module(kind).open_backend(options, data_dir)
