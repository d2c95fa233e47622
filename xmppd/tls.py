"""TLS for client streams: the server context and SASL channel-binding data.

Channel bindings for SCRAM-*-PLUS: tls-server-end-point (RFC 5929) on every TLS version,
tls-unique on TLS 1.2 only (RFC 9266 forbids it on 1.3) and tls-exporter (RFC 9266).
"""

from __future__ import annotations

import ctypes
import hashlib
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

EXPORTER_LABEL = b"EXPORTER-Channel-Binding"


@dataclass(frozen=True)
class ServerTls:
    """The server's certificate as the listeners use it: the context and what
    SCRAM-*-PLUS binds to."""

    context: ssl.SSLContext
    end_point: bytes

    @classmethod
    def load(cls, certificate: Path, key: Path, min_version: str) -> ServerTls:
        return cls(server_context(certificate, key, min_version), end_point_hash(certificate))

    def channel_bindings(self, ssl_object: ssl.SSLObject | None) -> dict[str, bytes]:
        return channel_bindings(ssl_object, self.end_point)


def server_context(certificate: Path, key: Path, min_version: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2 if min_version == "1.2" else ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(certificate, key)
    return context


def end_point_hash(certificate: Path) -> bytes:
    """RFC 5929 section 4.1: the certificate's hash, MD5 and SHA-1 replaced by SHA-256."""
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    algorithm = cert.signature_hash_algorithm
    name = algorithm.name if algorithm and algorithm.name not in ("md5", "sha1") else "sha256"
    return hashlib.new(name, cert.public_bytes(Encoding.DER)).digest()


def channel_bindings(ssl_object: ssl.SSLObject | None, end_point: bytes) -> dict[str, bytes]:
    """The channel-binding data that SCRAM-*-PLUS may use on this connection."""
    if ssl_object is None:
        return {}
    bindings = {"tls-server-end-point": end_point}
    if ssl_object.version() == "TLSv1.3":
        exporter = _tls_exporter(ssl_object)
        if exporter is not None:
            bindings["tls-exporter"] = exporter
    else:
        bindings["tls-unique"] = ssl_object.get_channel_binding("tls-unique")
    return bindings


# COMPAT: Python's ssl module (3.11-3.13) does not expose SSL_export_keying_material,
# which tls-exporter needs. We call OpenSSL on the SSL* of the connection: in CPython's
# _ssl._SSLSocket it follows PyObject_HEAD and the socket pointer. The version OpenSSL
# reports for that pointer must match Python's before the pointer is trusted.
_POINTER = ctypes.sizeof(ctypes.c_void_p)
_openssl = None
if sys.implementation.name == "cpython" and (3, 11) <= sys.version_info[:2] <= (3, 13):
    try:
        import _ssl

        _openssl = ctypes.CDLL(_ssl.__file__)
        _openssl.SSL_export_keying_material.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_int,
        ]
        _openssl.SSL_export_keying_material.restype = ctypes.c_int
        _openssl.SSL_get_version.argtypes = [ctypes.c_void_p]
        _openssl.SSL_get_version.restype = ctypes.c_char_p
    except (ImportError, OSError, AttributeError):
        _openssl = None


def _tls_exporter(ssl_object: ssl.SSLObject) -> bytes | None:
    inner = getattr(ssl_object, "_sslobj", None)
    if _openssl is None or type(inner).__name__ != "_SSLSocket":
        return None
    pointer = ctypes.c_void_p.from_address(id(inner) + 3 * _POINTER).value
    if not pointer or _openssl.SSL_get_version(pointer) != ssl_object.version().encode():
        return None
    out = ctypes.create_string_buffer(32)
    if _openssl.SSL_export_keying_material(pointer, out, 32, EXPORTER_LABEL, len(EXPORTER_LABEL), None, 0, 0) != 1:
        return None
    return out.raw
