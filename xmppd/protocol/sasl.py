"""Server side of the SASL mechanisms (RFC 4422): SCRAM (RFC 5802, RFC 7677) and PLAIN (RFC 4616).

Pure classes: they take the client's decoded messages as bytes, return the
server's messages as bytes, and raise ``SaslFailure`` with the RFC 6120
§6.5 condition to send.  Base64 on the wire and the ``<auth/>`` elements
belong to the negotiation; looking up credentials belongs to the caller:

    mechanism = ScramMechanism("sha256", plus=False, channel_binding=bindings)
    username = mechanism.client_first(initial_response)
    challenge = mechanism.server_first(await accounts.scram_credentials(username))
    success_data = mechanism.client_final(response)   # raises SaslFailure

Passwords are never stored: ``derive_scram_credentials`` keeps only the salt,
the iteration count, StoredKey and ServerKey, from which both SCRAM and PLAIN
can be verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from .errors import LocalProtocolError
from .jid import JID, InvalidJID

__all__ = [
    "ScramCredentials",
    "SaslFailure",
    "ScramMechanism",
    "PlainMechanism",
    "HashedTokenMechanism",
    "SASL_CONDITIONS",
    "derive_scram_credentials",
    "stand_in_credentials",
    "verify_plain_password",
    "saslprep",
    "check_authzid",
    "scram_mechanism_name",
]

DEFAULT_ITERATIONS = 4096
SALT_BYTES = 16
MAX_FIELD_BYTES = 1023

# RFC 6120 §6.5.
SASL_CONDITIONS = frozenset(
    {
        "aborted",
        "account-disabled",
        "credentials-expired",
        "encryption-required",
        "incorrect-encoding",
        "invalid-authzid",
        "invalid-mechanism",
        "malformed-request",
        "mechanism-too-weak",
        "not-authorized",
        "temporary-auth-failure",
    }
)

# hash name -> (name in the mechanism, hashlib constructor name)
_HASHES = {
    "sha1": "SHA-1",
    "sha256": "SHA-256",
    "sha512": "SHA-512",
}

# A per-process secret for the salts of unknown users: stable within one
# server run, so asking twice gives the same answer, and impossible to
# predict from outside, so a fake salt looks like a real one.
_FAKE_SALT_SECRET = secrets.token_bytes(32)


class SaslFailure(Exception):
    """Authentication failed; ``condition`` is the RFC 6120 §6.5 element to send."""

    def __init__(self, condition: str, text: str | None = None):
        if condition not in SASL_CONDITIONS:
            raise LocalProtocolError(f"unknown SASL failure condition {condition!r}")
        super().__init__(condition, text)
        self.condition = condition
        self.text = text

    def __str__(self) -> str:
        return f"{self.condition}: {self.text}" if self.text else self.condition


@dataclass(frozen=True)
class ScramCredentials:
    """What the server stores for one password and one hash function (RFC 5802 §3)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


# -- SASLprep (RFC 4013) -------------------------------------------------------

_normalize_3_2 = unicodedata.ucd_3_2_0.normalize

_PROHIBITED = (
    stringprep.in_table_c12,
    stringprep.in_table_c21_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)


def saslprep(text: str) -> str:
    """SASLprep (RFC 4013, stringprep profile for user names and passwords).

    Unassigned code points are allowed (the "query" rules), so a password
    with a character newer than Unicode 3.2 still works.  Raises ValueError.
    """
    if text.isascii():
        if text.isprintable():
            return text
        raise ValueError("control character")
    mapped = []
    for ch in text:
        if stringprep.in_table_c12(ch):
            mapped.append(" ")
        elif not stringprep.in_table_b1(ch):
            mapped.append(ch)
    result = _normalize_3_2("NFKC", "".join(mapped))
    has_rand_al = False
    has_l = False
    for ch in result:
        for table in _PROHIBITED:
            if table(ch):
                raise ValueError(f"prohibited character U+{ord(ch):04X}")
        if stringprep.in_table_d1(ch):
            has_rand_al = True
        elif stringprep.in_table_d2(ch):
            has_l = True
    if has_rand_al:
        if has_l:
            raise ValueError("mixed bidirectional text")
        if not (stringprep.in_table_d1(result[0]) and stringprep.in_table_d1(result[-1])):
            raise ValueError("right-to-left text must start and end with a right-to-left character")
    return result


# -- credentials -----------------------------------------------------------------


def _check_hash(hash_name: str) -> str:
    if hash_name not in _HASHES:
        raise LocalProtocolError(f"unsupported SCRAM hash {hash_name!r}")
    return hash_name


def scram_mechanism_name(hash_name: str, plus: bool = False) -> str:
    """'SCRAM-SHA-256', 'SCRAM-SHA-1-PLUS', ..."""
    return "SCRAM-" + _HASHES[_check_hash(hash_name)] + ("-PLUS" if plus else "")


def _keys_from_salted(hash_name: str, salted_password: bytes) -> tuple[bytes, bytes]:
    client_key = hmac.digest(salted_password, b"Client Key", hash_name)
    stored_key = hashlib.new(hash_name, client_key).digest()
    server_key = hmac.digest(salted_password, b"Server Key", hash_name)
    return stored_key, server_key


def derive_scram_credentials(
    password: str, hash_name: str, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
) -> ScramCredentials:
    """Derive the stored SCRAM keys for ``password`` (SASLprep'd; ValueError if it cannot be)."""
    _check_hash(hash_name)
    if iterations < 1:
        raise ValueError("iterations must be positive")
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    salted = hashlib.pbkdf2_hmac(hash_name, saslprep(password).encode("utf-8"), salt, iterations)
    stored_key, server_key = _keys_from_salted(hash_name, salted)
    return ScramCredentials(salt=salt, iterations=iterations, stored_key=stored_key, server_key=server_key)


def stand_in_credentials(
    username: str, hash_name: str, iterations: int = DEFAULT_ITERATIONS, secret: bytes = _FAKE_SALT_SECRET
) -> ScramCredentials:
    """Credentials for an unknown user: same shape and same work as a real user's, with a
    salt stable per user name, so that probing (SCRAM's salt, PLAIN's timing) cannot tell
    unknown users from known ones. No password matches them."""
    key = unicodedata.normalize("NFKC", username.casefold()).encode("utf-8")
    digest_size = hashlib.new(_check_hash(hash_name)).digest_size
    return ScramCredentials(
        salt=hmac.digest(secret, key, "sha256")[:SALT_BYTES],
        iterations=iterations,
        stored_key=secrets.token_bytes(digest_size),
        server_key=secrets.token_bytes(digest_size),
    )


def verify_plain_password(password: str, creds: ScramCredentials, hash_name: str) -> bool:
    """Whether ``password`` matches ``creds``, compared in constant time on StoredKey."""
    _check_hash(hash_name)
    try:
        prepared = saslprep(password).encode("utf-8")
    except ValueError:
        return False
    salted = hashlib.pbkdf2_hmac(hash_name, prepared, creds.salt, creds.iterations)
    stored_key, _ = _keys_from_salted(hash_name, salted)
    return hmac.compare_digest(stored_key, creds.stored_key)


def check_authzid(authzid: str | None, username: str, domain: str | None = None) -> None:
    """Accept an authorization identity only when it names the authenticating user.

    RFC 6120 §6.3.8: clients should leave it out; some send their bare JID.
    Raises ``SaslFailure('invalid-authzid')`` for anything else.
    """
    if not authzid:
        return
    if authzid == username:
        return
    try:
        jid = JID.parse(authzid)
        user = JID(username, domain or jid.domain)
    except (InvalidJID, ValueError):
        raise SaslFailure("invalid-authzid") from None
    if jid.resource is None and jid.local is not None and jid.local == user.local:
        if domain is None or jid.domain == user.domain:
            return
    raise SaslFailure("invalid-authzid")


# -- SCRAM -----------------------------------------------------------------------


def _decode_saslname(value: str) -> str:
    """Undo the ',' -> '=2C' and '=' -> '=3D' escaping of RFC 5802 §5.1."""
    if "=" not in value:
        return value
    parts = value.split("=")
    out = [parts[0]]
    for part in parts[1:]:
        escape, rest = part[:2], part[2:]
        if escape == "2C":
            out.append("," + rest)
        elif escape == "3D":
            out.append("=" + rest)
        else:
            raise SaslFailure("malformed-request", "bad escape in saslname")
    return "".join(out)


def _is_valid_nonce(nonce: str) -> bool:
    return bool(nonce) and nonce.isascii() and nonce.isprintable() and "," not in nonce and " " not in nonce


def _is_valid_cb_name(name: str) -> bool:
    return bool(name) and name.isascii() and all(ch.isalnum() or ch in ".-" for ch in name)


def _b64decode(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SaslFailure("malformed-request", "invalid base64") from None


def _b64encode(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _decode_message(data: bytes) -> str:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise LocalProtocolError("SASL data must be bytes")
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise SaslFailure("malformed-request", "not UTF-8") from None


class ScramMechanism:
    """One SCRAM exchange, server side: client_first -> server_first -> client_final.

    ``channel_binding`` maps the binding types this connection offers
    ('tls-exporter', 'tls-server-end-point', ...) to their data.  When it is
    not empty the server advertises the -PLUS mechanisms, so a client that
    says 'y' (it could bind but thinks we cannot) is a downgrade and fails;
    pass ``server_supports_plus`` to override that inference.
    ``nonce_factory`` returns the server's part of the nonce (tests make it
    fixed); ``domain`` lets an authzid equal to the user's bare JID pass.
    """

    def __init__(
        self,
        hash_name: str,
        *,
        plus: bool,
        channel_binding: dict[str, bytes],
        nonce_factory: Callable[[], str] | None = None,
        server_supports_plus: bool | None = None,
        domain: str | None = None,
        default_iterations: int = DEFAULT_ITERATIONS,
        fake_salt_secret: bytes | None = None,
    ):
        self.hash_name = _check_hash(hash_name)
        self.plus = plus
        self.name = scram_mechanism_name(hash_name, plus)
        self.channel_binding = dict(channel_binding or {})
        if plus and not self.channel_binding:
            raise LocalProtocolError("a -PLUS mechanism needs channel binding data")
        self.server_supports_plus = bool(self.channel_binding) if server_supports_plus is None else server_supports_plus
        self._nonce_factory = nonce_factory or _default_nonce
        self._domain = domain
        self._default_iterations = default_iterations
        self._fake_salt_secret = fake_salt_secret or _FAKE_SALT_SECRET
        self._digest_size = hashlib.new(hash_name).digest_size
        # Exchange state; a message's strings stay empty until the step that receives or
        # sends it (none of them is empty once set).
        self.username: str | None = None
        self.authzid: str | None = None
        self.channel_binding_type: str | None = None
        self.is_complete = False
        self._cbind_flag = ""
        self._gs2_header = ""
        self._client_first_bare = ""
        self._client_nonce = ""
        self._nonce = ""
        self._server_first = ""
        self._creds: ScramCredentials | None = None
        self._user_known = False

    def client_first(self, data: bytes) -> str:
        """Parse the GS2 header and client-first-message; return the SASLprep'd username."""
        if self._gs2_header:
            raise LocalProtocolError("client_first called twice")
        message = _decode_message(data)
        parts = message.split(",", 2)
        if len(parts) != 3:
            raise SaslFailure("malformed-request", "missing GS2 header")
        flag, authzid_field, bare = parts
        if flag in ("n", "y"):
            cb_name = None
        elif flag.startswith("p=") and _is_valid_cb_name(flag[2:]):
            cb_name = flag[2:]
        else:
            raise SaslFailure("malformed-request", "bad channel binding flag")
        if authzid_field:
            if not authzid_field.startswith("a=") or len(authzid_field) == 2:
                raise SaslFailure("malformed-request", "bad authzid")
            authzid = _decode_saslname(authzid_field[2:])
        else:
            authzid = None
        attributes = bare.split(",")
        if attributes[0].startswith("m="):
            raise SaslFailure("malformed-request", "unsupported mandatory extension")
        if len(attributes) < 2 or not attributes[0].startswith("n=") or not attributes[1].startswith("r="):
            raise SaslFailure("malformed-request", "bad client-first-message")
        raw_username = _decode_saslname(attributes[0][2:])
        nonce = attributes[1][2:]
        if not raw_username or len(raw_username.encode("utf-8")) > MAX_FIELD_BYTES:
            raise SaslFailure("malformed-request", "bad username")
        if not _is_valid_nonce(nonce):
            raise SaslFailure("malformed-request", "bad nonce")
        try:
            username = saslprep(raw_username)
        except ValueError:
            raise SaslFailure("malformed-request", "username fails SASLprep") from None
        if not username:
            raise SaslFailure("malformed-request", "bad username")
        check_authzid(authzid, username, self._domain)
        self._cbind_flag = flag
        self._gs2_header = flag + "," + authzid_field + ","
        self._client_first_bare = bare
        self._client_nonce = nonce
        self.channel_binding_type = cb_name
        self.username = username
        self.authzid = authzid
        return username

    def server_first(self, creds: ScramCredentials | None) -> bytes:
        """The server-first-message; ``None`` for an unknown user still gives a plausible one."""
        username = self.username
        if username is None or self._server_first:
            raise LocalProtocolError("server_first called out of order")
        if creds is None:
            creds = stand_in_credentials(username, self.hash_name, self._default_iterations, self._fake_salt_secret)
            self._user_known = False
        else:
            self._user_known = True
        self._creds = creds
        server_nonce = self._nonce_factory()
        if not _is_valid_nonce(server_nonce):
            raise LocalProtocolError("nonce_factory returned an invalid nonce")
        self._nonce = self._client_nonce + server_nonce
        self._server_first = "r=%s,s=%s,i=%d" % (self._nonce, _b64encode(creds.salt), creds.iterations)
        return self._server_first.encode("ascii")

    def client_final(self, data: bytes) -> bytes:
        """Verify channel binding, nonce and proof; return the server-final-message ('v=...')."""
        creds = self._creds
        if creds is None or self.is_complete:
            raise LocalProtocolError("client_final called out of order")
        self.is_complete = True  # one attempt per exchange, whatever the outcome
        message = _decode_message(data)
        proof_at = message.rfind(",p=")
        if proof_at < 0:
            raise SaslFailure("malformed-request", "missing proof")
        without_proof = message[:proof_at]
        attributes = without_proof.split(",")
        if len(attributes) < 2 or not attributes[0].startswith("c=") or not attributes[1].startswith("r="):
            raise SaslFailure("malformed-request", "bad client-final-message")
        cbind_input = _b64decode(attributes[0][2:])
        proof = _b64decode(message[proof_at + 3 :])
        if len(proof) != self._digest_size:
            raise SaslFailure("malformed-request", "bad proof length")

        self._check_channel_binding(cbind_input)
        if not hmac.compare_digest(attributes[1][2:].encode("utf-8"), self._nonce.encode("utf-8")):
            raise SaslFailure("not-authorized", "nonce mismatch")

        auth_message = ",".join((self._client_first_bare, self._server_first, without_proof)).encode("utf-8")
        client_signature = hmac.digest(creds.stored_key, auth_message, self.hash_name)
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        computed = hashlib.new(self.hash_name, client_key).digest()
        if not (hmac.compare_digest(computed, creds.stored_key) and self._user_known):
            raise SaslFailure("not-authorized")
        server_signature = hmac.digest(creds.server_key, auth_message, self.hash_name)
        return b"v=" + base64.b64encode(server_signature)

    def _check_channel_binding(self, cbind_input: bytes) -> None:
        """RFC 5802 §6 and RFC 5056: the flag must fit the mechanism and the data must match."""
        flag = self._cbind_flag
        if self.plus:
            if self.channel_binding_type is None:
                raise SaslFailure("not-authorized", "a -PLUS mechanism requires channel binding")
            cb_data = self.channel_binding.get(self.channel_binding_type)
            if cb_data is None:
                raise SaslFailure("not-authorized", "unsupported channel binding type")
        else:
            if self.channel_binding_type is not None:
                raise SaslFailure("not-authorized", "channel binding requested without -PLUS")
            if flag == "y" and self.server_supports_plus:
                raise SaslFailure("not-authorized", "channel binding downgrade")
            cb_data = b""
        expected = self._gs2_header.encode("utf-8") + cb_data
        if not hmac.compare_digest(cbind_input, expected):
            raise SaslFailure("not-authorized", "channel binding mismatch")


def _default_nonce() -> str:
    return secrets.token_urlsafe(24)


# -- HT (XEP-0484 FAST tokens) ----------------------------------------------------------


class HashedTokenMechanism:
    """HT-SHA-256-* of draft-schmaus-kitten-sasl-ht, the mechanisms of XEP-0484: one
    message each way. The client proves it holds a token without sending it,
    HMAC(token, "Initiator" || cb-data); the server answers HMAC(token, "Responder" ||
    cb-data). `channel_binding` is the cb-data of the mechanism's type (b"" for -NONE)."""

    def __init__(self, channel_binding: bytes) -> None:
        self.channel_binding = channel_binding
        self._proof = b""

    def parse(self, message: bytes) -> str:
        """The authcid of `authcid NUL initiator-hashed-token`."""
        authcid, separator, proof = message.partition(b"\0")
        if not separator or not authcid or not proof:
            raise SaslFailure("malformed-request")
        self._proof = proof
        try:
            return authcid.decode()
        except UnicodeDecodeError:
            raise SaslFailure("malformed-request") from None

    def verify(self, tokens: list[bytes]) -> tuple[bytes, bytes]:
        """The token of `tokens` the client proved to hold, and the server's answer.
        Every token is compared, in constant time."""
        matched = None
        for token in tokens:
            expected = hmac.new(token, b"Initiator" + self.channel_binding, hashlib.sha256).digest()
            if hmac.compare_digest(expected, self._proof):
                matched = token
        if matched is None:
            raise SaslFailure("not-authorized")
        return matched, hmac.new(matched, b"Responder" + self.channel_binding, hashlib.sha256).digest()


# -- PLAIN -----------------------------------------------------------------------


class PlainMechanism:
    """PLAIN (RFC 4616): one message, ``authzid NUL authcid NUL passwd``."""

    name = "PLAIN"

    def parse(self, data: bytes) -> tuple[str, str, str]:
        """Return (authzid, authcid, password); authzid is '' when absent, authcid SASLprep'd.

        The password is returned as sent; ``verify_plain_password`` prepares it.
        """
        fields = bytes(data).split(b"\0")
        if len(fields) != 3:
            raise SaslFailure("malformed-request", "expected three NUL-separated fields")
        if any(len(field) > MAX_FIELD_BYTES for field in fields):
            raise SaslFailure("malformed-request", "field too long")
        try:
            authzid, authcid, password = (field.decode("utf-8") for field in fields)
        except UnicodeDecodeError:
            raise SaslFailure("malformed-request", "not UTF-8") from None
        if not authcid or not password:
            raise SaslFailure("malformed-request", "empty user name or password")
        try:
            authcid = saslprep(authcid)
        except ValueError:
            raise SaslFailure("malformed-request", "user name fails SASLprep") from None
        if not authcid:
            raise SaslFailure("malformed-request", "empty user name")
        return authzid, authcid, password
