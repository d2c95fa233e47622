"""Storage: interfaces in `interfaces`, one backend per subpackage (sqlite, postgresql,
cassandra, memory).

A backend subpackage defines a frozen dataclass `Options` (read from the config section
``[storage.<kind>]``) and ``open_backend(options, data_dir) -> StorageBackend``.
"""

import importlib

from .interfaces import StorageBackend, Upload


class StorageUnavailable(RuntimeError):
    """A backend cannot be used as configured: unreachable, or its schema is missing
    (the message says what to do)."""


def domain_of(jid: str) -> str:
    """The domain of a bare JID (the JID itself when it has no local part): what
    accounts are listed by, and rooms by their service."""
    return jid.partition("@")[2] or jid


# The columns of an upload row, in the order `upload_of` reads them (the SQL backends).
UPLOAD_COLUMNS = "id, owner, filename, size, content_type, created, expires, completed"


def upload_of(row) -> Upload:
    """An Upload from a row of UPLOAD_COLUMNS."""
    return Upload(
        id=row[0],
        owner=row[1],
        filename=row[2],
        size=row[3],
        content_type=row[4],
        created=row[5],
        expires=row[6],
        completed=bool(row[7]),
    )


def backend_module(kind: str):
    return importlib.import_module(f"{__name__}.{kind}")


def open_backend(kind: str, options, data_dir: str) -> StorageBackend:
    """Build backend `kind` from its validated options."""
    return backend_module(kind).open_backend(options, data_dir)
