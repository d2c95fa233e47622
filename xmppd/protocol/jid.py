"""Jabber identifiers (RFC 7622): parsing, normalisation and comparison.

The PRECIS profiles are approximated with the standard library:

* localpart: NFKC, case folded, then rejected if it contains one of
  ``" & ' / : < > @``, whitespace, controls, format characters, surrogates,
  private-use or unassigned code points;
* domainpart: NFKC and lower case, one trailing dot removed, each label 1..63
  octets (measured on the ACE form for non-ASCII labels) made of letters,
  digits, marks, ``-`` and ``_`` without a leading or trailing hyphen; IPv4
  literals pass as all-digit labels, IPv6 literals must be bracketed;
* resourcepart: non-ASCII spaces mapped to U+0020, NFC, controls, surrogates
  and unassigned code points rejected.

Each part must be 1..1023 octets of UTF-8.  ``JID.parse`` is memoised, so a
JID that crosses the router many times is validated once.
"""

from __future__ import annotations

import functools
import ipaddress
import unicodedata
from collections.abc import Callable

__all__ = ["InvalidJID", "JID"]

MAX_PART_BYTES = 1023
MAX_LABEL_BYTES = 63
PARSE_CACHE_SIZE = 16384

_LOCAL_FORBIDDEN = frozenset("\"&'/:<>@")
_LOCAL_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
_RESOURCE_BAD_CATEGORIES = frozenset({"Cc", "Cs", "Cn", "Zl", "Zp"})
_DOMAIN_ASCII_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


class InvalidJID(ValueError):
    """Raised when a string is not a valid JID (maps to jid-malformed)."""


def _check_length(part: str, what: str) -> None:
    if not part:
        raise InvalidJID(f"empty {what}")
    # Cheap upper bound first: a str of n code points has at most 4n octets.
    if len(part) * 4 > MAX_PART_BYTES and len(part.encode("utf-8")) > MAX_PART_BYTES:
        raise InvalidJID(f"{what} longer than {MAX_PART_BYTES} octets")


def _normalise_local(local: str) -> str:
    if local.isascii():
        return local.lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", local).casefold())


def _normalise_domain(domain: str) -> str:
    if not domain.isascii():
        domain = unicodedata.normalize("NFKC", domain)
    domain = domain.lower()
    if domain.endswith("."):
        domain = domain[:-1]
    return domain


def _normalise_resource(resource: str) -> str:
    if resource.isascii():
        return resource
    resource = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in resource)
    return unicodedata.normalize("NFC", resource)


def _validate_local(local: str) -> str:
    local = _normalise_local(local)
    _check_length(local, "localpart")
    for ch in local:
        if ch in _LOCAL_FORBIDDEN or ch.isspace():
            raise InvalidJID(f"forbidden character {ch!r} in localpart")
        if ch.isascii():
            if not ch.isprintable():
                raise InvalidJID("control character in localpart")
        elif unicodedata.category(ch) in _LOCAL_BAD_CATEGORIES:
            raise InvalidJID(f"disallowed character U+{ord(ch):04X} in localpart")
    return local


def _validate_label(label: str) -> None:
    if not label:
        raise InvalidJID("empty label in domainpart")
    if label[0] == "-" or label[-1] == "-":
        raise InvalidJID("domain label starts or ends with a hyphen")
    if label.isascii():
        if len(label) > MAX_LABEL_BYTES:
            raise InvalidJID("domain label longer than 63 octets")
        for ch in label:
            if ch not in _DOMAIN_ASCII_OK:
                raise InvalidJID(f"forbidden character {ch!r} in domainpart")
        return
    for ch in label:
        if ch.isascii():
            if ch not in _DOMAIN_ASCII_OK:
                raise InvalidJID(f"forbidden character {ch!r} in domainpart")
        elif unicodedata.category(ch)[0] not in "LMN":
            raise InvalidJID(f"disallowed character U+{ord(ch):04X} in domainpart")
    if len(label.encode("punycode")) + 4 > MAX_LABEL_BYTES:
        raise InvalidJID("domain label longer than 63 octets")


def _validate_domain(domain: str) -> str:
    domain = _normalise_domain(domain)
    _check_length(domain, "domainpart")
    if domain[0] == "[":
        if domain[-1] != "]":
            raise InvalidJID("unterminated IPv6 literal")
        try:
            address = ipaddress.IPv6Address(domain[1:-1])
        except ValueError:
            raise InvalidJID("invalid IPv6 literal") from None
        return f"[{address.compressed}]"
    for label in domain.split("."):
        _validate_label(label)
    return domain


def _validate_resource(resource: str) -> str:
    resource = _normalise_resource(resource)
    _check_length(resource, "resourcepart")
    if resource.isascii():
        if not resource.isprintable():
            raise InvalidJID("control character in resourcepart")
        return resource
    for ch in resource:
        if unicodedata.category(ch) in _RESOURCE_BAD_CATEGORIES:
            raise InvalidJID(f"disallowed character U+{ord(ch):04X} in resourcepart")
    return resource


class JID:
    """An immutable, normalised JID.  Compare and hash on (local, domain, resource)."""

    __slots__ = ("local", "domain", "resource", "_hash", "_str")

    local: str | None
    domain: str
    resource: str | None
    _hash: int | None  # computed on first use
    _str: str | None

    def __init__(self, local: str | None, domain: str, resource: str | None = None) -> None:
        # Normalise but do not validate: callers building JIDs from trusted
        # parts (configuration, storage) should not pay for the checks.
        setter = object.__setattr__
        setter(self, "local", _normalise_local(local) if local else None)
        setter(self, "domain", _normalise_domain(domain))
        setter(self, "resource", _normalise_resource(resource) if resource else None)
        setter(self, "_hash", None)
        setter(self, "_str", None)

    @classmethod
    def _trusted(cls, local: str | None, domain: str, resource: str | None) -> JID:
        """Build from parts that are already validated and normalised."""
        jid = object.__new__(cls)
        setter = object.__setattr__
        setter(jid, "local", local)
        setter(jid, "domain", domain)
        setter(jid, "resource", resource)
        setter(jid, "_hash", None)
        setter(jid, "_str", None)
        return jid

    @staticmethod
    def parse(text: str) -> JID:
        """Parse and validate ``text``; raise ``InvalidJID`` when it is not a JID."""
        return _parse(text)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("JID is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("JID is immutable")

    def __reduce__(self) -> tuple[Callable[[str | None, str, str | None], JID], tuple[str | None, str, str | None]]:
        return (_rebuild, (self.local, self.domain, self.resource))

    def __copy__(self) -> JID:
        return self

    def __deepcopy__(self, memo: object) -> JID:
        return self

    @property
    def bare(self) -> JID:
        """This JID without its resource."""
        if self.resource is None:
            return self
        return JID._trusted(self.local, self.domain, None)

    @property
    def host(self) -> JID:
        """The domain alone, as a JID."""
        if self.local is None and self.resource is None:
            return self
        return JID._trusted(None, self.domain, None)

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    @property
    def is_host(self) -> bool:
        return self.local is None and self.resource is None

    def with_resource(self, resource: str | None) -> JID:
        """This JID with ``resource`` (validated, may raise ``InvalidJID``)."""
        if resource is None:
            return self.bare
        return JID._trusted(self.local, self.domain, _validate_resource(resource))

    def __str__(self) -> str:
        text = self._str
        if text is None:
            text = self.domain
            if self.local is not None:
                text = f"{self.local}@{text}"
            if self.resource is not None:
                text = f"{text}/{self.resource}"
            object.__setattr__(self, "_str", text)
        return text

    def __repr__(self) -> str:
        return f"JID({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, JID):
            return NotImplemented
        return self.domain == other.domain and self.local == other.local and self.resource == other.resource

    def __hash__(self) -> int:
        value = self._hash
        if value is None:
            value = hash((self.local, self.domain, self.resource))
            object.__setattr__(self, "_hash", value)
        return value


def _rebuild(local: str | None, domain: str, resource: str | None) -> JID:
    return JID._trusted(local, domain, resource)


@functools.lru_cache(maxsize=PARSE_CACHE_SIZE)
def _parse(text: str) -> JID:
    if not isinstance(text, str):
        raise InvalidJID("a JID is a string")
    slash = text.find("/")
    if slash >= 0:
        address, resource = text[:slash], text[slash + 1 :]
        if not resource:
            raise InvalidJID("empty resourcepart")
    else:
        address, resource = text, None
    at = address.find("@")
    if at >= 0:
        local, domain = address[:at], address[at + 1 :]
        if not local:
            raise InvalidJID("empty localpart")
    else:
        local, domain = None, address
    return JID._trusted(
        _validate_local(local) if local is not None else None,
        _validate_domain(domain),
        _validate_resource(resource) if resource is not None else None,
    )
