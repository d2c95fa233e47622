"""How an account's SCRAM secrets (RFC 5802 salted keys) are kept: one text per account,
written and read the same way by every backend.

The text is compact JSON with sorted keys, ``{hash name: {field: value}}``, the bytes
fields in standard base64::

    {"sha1":{"iterations":4096,"salt":"...","server_key":"...","stored_key":"..."}}

It is what SQLite's, PostgreSQL's and Cassandra's ``accounts.secrets`` columns hold:
changing it needs a migration of each, so a reader stays able to read every text
written before.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import typing

from xmppd.protocol.sasl import ScramCredentials

_BYTES_FIELDS = frozenset(name for name, hint in typing.get_type_hints(ScramCredentials).items() if hint is bytes)


def encode_secrets(secrets: dict[str, ScramCredentials]) -> str:
    return json.dumps(
        {
            name: {
                field.name: (
                    base64.b64encode(value).decode("ascii") if isinstance(value, (bytes, bytearray)) else value
                )
                for field in dataclasses.fields(credentials)
                for value in [getattr(credentials, field.name)]
            }
            for name, credentials in secrets.items()
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def decode_secrets(text: str) -> dict[str, ScramCredentials]:
    return {
        name: ScramCredentials(
            **{key: base64.b64decode(value) if key in _BYTES_FIELDS else value for key, value in fields.items()}
        )
        for name, fields in json.loads(text).items()
    }
