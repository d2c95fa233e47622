"""storage/scram_secrets.py: the one encoding of SCRAM secrets that every backend stores."""

import pytest

from xmppd.protocol.sasl import ScramCredentials, derive_scram_credentials
from xmppd.storage.scram_secrets import decode_secrets, encode_secrets

SECRETS = {
    "sha1": ScramCredentials(salt=b"\x00\x01salt", iterations=4096, stored_key=b"\xffstored", server_key=b"server\x10"),
    "sha256": ScramCredentials(
        salt=b"pepper", iterations=10000, stored_key=bytes(range(32)), server_key=bytes(range(32, 64))
    ),
}

# SECRETS as the SQLite and the Cassandra backends wrote them before the encoding was
# made one (their two copies wrote the same text): rows of existing databases.
WRITTEN_BEFORE = (
    '{"sha1":{"iterations":4096,"salt":"AAFzYWx0","server_key":"c2VydmVyEA==",'
    '"stored_key":"/3N0b3JlZA=="},"sha256":{"iterations":10000,"salt":"cGVwcGVy",'
    '"server_key":"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",'
    '"stored_key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}}'
)


def test_secrets_written_before_are_read():
    assert decode_secrets(WRITTEN_BEFORE) == SECRETS


def test_the_format_on_disk_is_unchanged():
    assert encode_secrets(SECRETS) == WRITTEN_BEFORE


@pytest.mark.parametrize("names", [[], ["sha1"], ["sha256"], ["sha1", "sha256"]])
def test_round_trip(names):
    secrets = {name: derive_scram_credentials("pencil ✏", name, iterations=4096) for name in names}
    assert decode_secrets(encode_secrets(secrets)) == secrets


def test_bytes_come_back_as_bytes():
    decoded = decode_secrets(encode_secrets(SECRETS))["sha1"]
    assert type(decoded.salt) is bytes and type(decoded.stored_key) is bytes
    assert type(decoded.iterations) is int
