import base64
import hashlib
import hmac

import pytest

from xmppd.protocol.errors import LocalProtocolError
from xmppd.protocol.sasl import (
    PlainMechanism,
    SaslFailure,
    ScramCredentials,
    ScramMechanism,
    derive_scram_credentials,
    saslprep,
    verify_plain_password,
)

# -- RFC test vectors -------------------------------------------------------------------


def test_scram_sha1_rfc5802_vector():
    creds = derive_scram_credentials("pencil", "sha1", base64.b64decode("QSXCR+Q6sek8bf92"), 4096)
    mechanism = ScramMechanism("sha1", plus=False, channel_binding={}, nonce_factory=lambda: "3rfcNHYJY1ZVvWVs7j")
    assert mechanism.name == "SCRAM-SHA-1"
    assert mechanism.client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL") == "user"
    assert mechanism.server_first(creds) == b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    final = mechanism.client_final(
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    )
    assert final == b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="
    assert mechanism.is_complete


def test_scram_sha256_rfc7677_vector():
    creds = derive_scram_credentials("pencil", "sha256", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
    mechanism = ScramMechanism(
        "sha256", plus=False, channel_binding={}, nonce_factory=lambda: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    )
    assert mechanism.name == "SCRAM-SHA-256"
    assert mechanism.client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == "user"
    assert mechanism.server_first(creds) == (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    final = mechanism.client_final(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert final == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


# -- a minimal client, to drive the mechanism -------------------------------------------


class ScramClient:
    def __init__(self, hash_name, username, password, *, gs2_header="n,,", cb_data=b"", nonce="clientnonce"):
        self.hash_name = hash_name
        self.password = password
        self.gs2_header = gs2_header
        self.cb_data = cb_data
        self.nonce = nonce
        escaped = username.replace("=", "=3D").replace(",", "=2C")
        self.first_bare = f"n={escaped},r={nonce}"

    def first(self) -> bytes:
        return (self.gs2_header + self.first_bare).encode()

    def final(self, server_first: bytes, *, nonce=None, cbind=None) -> bytes:
        server_first_text = server_first.decode()
        fields = dict(item.split("=", 1) for item in server_first_text.split(","))
        salt = base64.b64decode(fields["s"])
        salted = hashlib.pbkdf2_hmac(self.hash_name, self.password.encode(), salt, int(fields["i"]))
        client_key = hmac.digest(salted, b"Client Key", self.hash_name)
        stored_key = hashlib.new(self.hash_name, client_key).digest()
        if cbind is None:
            cbind = self.gs2_header.encode() + self.cb_data
        without_proof = "c=%s,r=%s" % (base64.b64encode(cbind).decode(), nonce or fields["r"])
        auth_message = ",".join((self.first_bare, server_first_text, without_proof)).encode()
        signature = hmac.digest(stored_key, auth_message, self.hash_name)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.expected_server_signature = hmac.digest(
            hmac.digest(salted, b"Server Key", self.hash_name), auth_message, self.hash_name
        )
        return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()


CREDS = {
    name: derive_scram_credentials("s3cret \u00e9", name, b"0123456789abcdef", 4096) for name in ("sha1", "sha256")
}
BINDINGS = {"tls-exporter": b"\x01" * 32, "tls-server-end-point": b"\x02" * 32}


def run(mechanism, client, creds, **final_kwargs):
    mechanism.client_first(client.first())
    server_first = mechanism.server_first(creds)
    return mechanism.client_final(client.final(server_first, **final_kwargs))


@pytest.mark.parametrize("hash_name", ["sha1", "sha256"])
def test_successful_exchange(hash_name):
    client = ScramClient(hash_name, "juliet", "s3cret \u00e9")
    mechanism = ScramMechanism(hash_name, plus=False, channel_binding={})
    final = run(mechanism, client, CREDS[hash_name])
    assert final == b"v=" + base64.b64encode(client.expected_server_signature)


@pytest.mark.parametrize("hash_name", ["sha1", "sha256"])
def test_wrong_password(hash_name):
    client = ScramClient(hash_name, "juliet", "wrong")
    mechanism = ScramMechanism(hash_name, plus=False, channel_binding={})
    with pytest.raises(SaslFailure) as info:
        run(mechanism, client, CREDS[hash_name])
    assert info.value.condition == "not-authorized"


def test_wrong_nonce():
    client = ScramClient("sha256", "juliet", "s3cret \u00e9")
    mechanism = ScramMechanism("sha256", plus=False, channel_binding={})
    with pytest.raises(SaslFailure) as info:
        run(mechanism, client, CREDS["sha256"], nonce="clientnonceOTHER")
    assert info.value.condition == "not-authorized"


def test_only_one_final_attempt():
    client = ScramClient("sha256", "juliet", "wrong")
    mechanism = ScramMechanism("sha256", plus=False, channel_binding={})
    mechanism.client_first(client.first())
    final = client.final(mechanism.server_first(CREDS["sha256"]))
    with pytest.raises(SaslFailure):
        mechanism.client_final(final)
    with pytest.raises(LocalProtocolError):
        mechanism.client_final(final)


def test_out_of_order_calls_are_our_bug():
    mechanism = ScramMechanism("sha256", plus=False, channel_binding={})
    with pytest.raises(LocalProtocolError):
        mechanism.server_first(None)
    with pytest.raises(LocalProtocolError):
        mechanism.client_final(b"c=biws,r=x,p=AAAA")
    mechanism.client_first(b"n,,n=u,r=abc")
    with pytest.raises(LocalProtocolError):
        mechanism.client_first(b"n,,n=u,r=abc")


def test_escaped_and_unicode_username():
    mechanism = ScramMechanism("sha256", plus=False, channel_binding={})
    assert mechanism.client_first("n,,n=a=2Cb=3Dc\u00a0\u2163,r=abc".encode()) == "a,b=c IV"


# -- channel binding ----------------------------------------------------------------------


@pytest.mark.parametrize("cb_type", sorted(BINDINGS))
def test_plus_with_matching_binding(cb_type):
    client = ScramClient("sha256", "juliet", "s3cret \u00e9", gs2_header=f"p={cb_type},,", cb_data=BINDINGS[cb_type])
    mechanism = ScramMechanism("sha256", plus=True, channel_binding=BINDINGS)
    assert mechanism.name == "SCRAM-SHA-256-PLUS"
    assert run(mechanism, client, CREDS["sha256"]).startswith(b"v=")
    assert mechanism.channel_binding_type == cb_type


def test_plus_with_mismatching_binding():
    client = ScramClient("sha256", "juliet", "s3cret \u00e9", gs2_header="p=tls-exporter,,", cb_data=b"\x09" * 32)
    mechanism = ScramMechanism("sha256", plus=True, channel_binding=BINDINGS)
    with pytest.raises(SaslFailure) as info:
        run(mechanism, client, CREDS["sha256"])
    assert info.value.condition == "not-authorized"


def test_plus_with_unsupported_binding_type():
    client = ScramClient("sha256", "juliet", "s3cret \u00e9", gs2_header="p=tls-unique,,", cb_data=b"\x01" * 12)
    mechanism = ScramMechanism("sha256", plus=True, channel_binding=BINDINGS)
    with pytest.raises(SaslFailure) as info:
        run(mechanism, client, CREDS["sha256"])
    assert info.value.condition == "not-authorized"


def test_plus_mechanism_without_binding_flag_fails():
    for header in ("n,,", "y,,"):
        client = ScramClient("sha256", "juliet", "s3cret \u00e9", gs2_header=header)
        mechanism = ScramMechanism("sha256", plus=True, channel_binding=BINDINGS)
        with pytest.raises(SaslFailure) as info:
            run(mechanism, client, CREDS["sha256"])
        assert info.value.condition == "not-authorized"


def test_binding_requested_on_a_non_plus_mechanism_fails():
    client = ScramClient(
        "sha256", "juliet", "s3cret \u00e9", gs2_header="p=tls-exporter,,", cb_data=BINDINGS["tls-exporter"]
    )
    mechanism = ScramMechanism("sha256", plus=False, channel_binding=BINDINGS)
    with pytest.raises(SaslFailure):
        run(mechanism, client, CREDS["sha256"])


def test_y_flag_is_a_downgrade_when_we_offer_plus():
    client = ScramClient("sha256", "juliet", "s3cret \u00e9", gs2_header="y,,")
    mechanism = ScramMechanism("sha256", plus=False, channel_binding=BINDINGS)
    with pytest.raises(SaslFailure) as info:
        run(mechanism, client, CREDS["sha256"])
    assert info.value.condition == "not-authorized"


def test_y_flag_is_fine_when_we_offer_no_plus():
    client = ScramClient("sha256", "juliet", "s3cret \u00e9", gs2_header="y,,")
    mechanism = ScramMechanism("sha256", plus=False, channel_binding={})
    assert run(mechanism, client, CREDS["sha256"]).startswith(b"v=")
    # ... or when the caller says the PLUS variants are not advertised.
    mechanism = ScramMechanism("sha256", plus=False, channel_binding=BINDINGS, server_supports_plus=False)
    assert run(mechanism, ScramClient("sha256", "juliet", "s3cret \u00e9", gs2_header="y,,"), CREDS["sha256"])


def test_gs2_header_must_be_repeated_in_c():
    # The client says 'n' first, then claims 'y' in the final message.
    client = ScramClient("sha256", "juliet", "s3cret \u00e9", gs2_header="n,,")
    mechanism = ScramMechanism("sha256", plus=False, channel_binding={})
    with pytest.raises(SaslFailure) as info:
        run(mechanism, client, CREDS["sha256"], cbind=b"y,,")
    assert info.value.condition == "not-authorized"


def test_plus_needs_binding_data():
    with pytest.raises(LocalProtocolError):
        ScramMechanism("sha256", plus=True, channel_binding={})


# -- unknown users ---------------------------------------------------------------------------


def salt_and_iterations(server_first: bytes):
    fields = dict(item.split("=", 1) for item in server_first.decode().split(","))
    return base64.b64decode(fields["s"]), int(fields["i"])


def test_unknown_user_gets_a_plausible_challenge_and_fails():
    client = ScramClient("sha256", "nobody", "whatever")
    mechanism = ScramMechanism("sha256", plus=False, channel_binding={})
    mechanism.client_first(client.first())
    server_first = mechanism.server_first(None)
    salt, iterations = salt_and_iterations(server_first)
    real_salt, real_iterations = salt_and_iterations(_challenge("juliet", CREDS["sha256"]))
    assert len(salt) == len(real_salt) and iterations == real_iterations
    with pytest.raises(SaslFailure) as info:
        mechanism.client_final(client.final(server_first))
    assert info.value.condition == "not-authorized"


def _challenge(username, creds):
    mechanism = ScramMechanism("sha256", plus=False, channel_binding={})
    mechanism.client_first(f"n,,n={username},r=abc".encode())
    return mechanism.server_first(creds)


def test_unknown_user_salt_is_stable_per_user_and_not_guessable():
    first = salt_and_iterations(_challenge("nobody", None))[0]
    assert salt_and_iterations(_challenge("nobody", None))[0] == first
    assert salt_and_iterations(_challenge("NoBody", None))[0] == first
    assert salt_and_iterations(_challenge("somebody", None))[0] != first
    # Not a plain hash of the name, which an attacker could compute to spot fakes.
    assert hashlib.sha256(b"nobody").digest()[:16] != first
    assert hashlib.sha1(b"nobody").digest()[:16] != first


def test_unknown_user_with_the_right_proof_for_the_fake_salt_still_fails():
    # Even a client that happens to know the fake salt cannot log in.
    client = ScramClient("sha256", "nobody", "")
    mechanism = ScramMechanism("sha256", plus=False, channel_binding={})
    mechanism.client_first(client.first())
    with pytest.raises(SaslFailure):
        mechanism.client_final(client.final(mechanism.server_first(None)))


# -- malformed messages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"n,n=user,r=abc",
        b"x,,n=user,r=abc",
        b"p=,,n=user,r=abc",
        b"p=bad name,,n=user,r=abc",
        b"n,,r=abc,n=user",
        b"n,,n=user",
        b"n,,n=,r=abc",
        b"n,,n=user,r=",
        b"n,,n=user,r=a b",
        b"n,,n=us=2Xer,r=abc",
        b"n,,n=us=er,r=abc",
        b"n,,m=ext,n=user,r=abc",
        b"n,b=x,n=user,r=abc",
        b"n,a=,n=user,r=abc",
        b"n,,n=\xff,r=abc",
        b"n,,n=us\x07er,r=abc",
    ],
)
def test_malformed_client_first(message):
    mechanism = ScramMechanism("sha256", plus=False, channel_binding={})
    with pytest.raises(SaslFailure) as info:
        mechanism.client_first(message)
    assert info.value.condition == "malformed-request"


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"c=biws,r=abcXYZ",
        b"r=abcXYZ,c=biws,p=AAAA",
        b"c=!!!!,r=abcXYZ,p=" + base64.b64encode(b"\0" * 32),
        b"c=biws,r=abcXYZ,p=!!!!",
        b"c=biws,r=abcXYZ,p=" + base64.b64encode(b"\0" * 5),
        b"c=biws,r=abcXYZ,p=\xff",
    ],
)
def test_malformed_client_final(message):
    mechanism = ScramMechanism("sha256", plus=False, channel_binding={}, nonce_factory=lambda: "XYZ")
    mechanism.client_first(b"n,,n=juliet,r=abc")
    mechanism.server_first(CREDS["sha256"])
    with pytest.raises(SaslFailure) as info:
        mechanism.client_final(message)
    assert info.value.condition == "malformed-request"


def test_authzid():
    mechanism = ScramMechanism("sha256", plus=False, channel_binding={}, domain="example.com")
    assert mechanism.client_first(b"n,a=juliet@example.com,n=juliet,r=abc") == "juliet"
    assert mechanism.authzid == "juliet@example.com"
    mechanism = ScramMechanism("sha256", plus=False, channel_binding={})
    assert mechanism.client_first(b"n,a=juliet,n=juliet,r=abc") == "juliet"
    for authzid in (b"romeo@example.com", b"romeo", b"juliet@other.example", b"juliet@example.com/res"):
        mechanism = ScramMechanism("sha256", plus=False, channel_binding={}, domain="example.com")
        with pytest.raises(SaslFailure) as info:
            mechanism.client_first(b"n,a=" + authzid + b",n=juliet,r=abc")
        assert info.value.condition == "invalid-authzid", authzid


def test_nonce_factory_output_is_checked():
    mechanism = ScramMechanism("sha256", plus=False, channel_binding={}, nonce_factory=lambda: "a,b")
    mechanism.client_first(b"n,,n=juliet,r=abc")
    with pytest.raises(LocalProtocolError):
        mechanism.server_first(CREDS["sha256"])


def test_default_nonce_is_random():
    nonces = set()
    for _ in range(3):
        mechanism = ScramMechanism("sha256", plus=False, channel_binding={})
        mechanism.client_first(b"n,,n=juliet,r=abc")
        nonces.add(mechanism.server_first(CREDS["sha256"]).split(b",")[0])
    assert len(nonces) == 3


def test_mechanism_names():
    assert ScramMechanism("sha1", plus=True, channel_binding=BINDINGS).name == "SCRAM-SHA-1-PLUS"
    assert ScramMechanism("sha256", plus=False, channel_binding=BINDINGS).name == "SCRAM-SHA-256"
    with pytest.raises(LocalProtocolError):
        ScramMechanism("md5", plus=False, channel_binding={})


# -- credentials and PLAIN --------------------------------------------------------------------


def test_derive_credentials_shape():
    creds = derive_scram_credentials("pencil", "sha256")
    assert isinstance(creds, ScramCredentials)
    assert len(creds.salt) == 16 and creds.iterations == 4096
    assert len(creds.stored_key) == 32 and len(creds.server_key) == 32
    assert derive_scram_credentials("pencil", "sha256").salt != creds.salt
    assert len(derive_scram_credentials("pencil", "sha1", iterations=10).stored_key) == 20


def test_derive_credentials_saslprep():
    salt = b"s" * 16
    a = derive_scram_credentials("I\u00adX", "sha256", salt, 10)  # soft hyphen maps to nothing
    b = derive_scram_credentials("IX", "sha256", salt, 10)
    c = derive_scram_credentials("\u2168", "sha256", salt, 10)  # ROMAN NUMERAL NINE -> "IX" by NFKC
    assert a == b == c
    with pytest.raises(ValueError):
        derive_scram_credentials("bad\x07", "sha256", salt, 10)


def test_verify_plain_password():
    creds = CREDS["sha256"]
    assert verify_plain_password("s3cret \u00e9", creds, "sha256")
    assert verify_plain_password("s3cret e\u0301", creds, "sha256")  # NFKC composes
    assert not verify_plain_password("s3cret e", creds, "sha256")
    assert not verify_plain_password("", creds, "sha256")
    assert not verify_plain_password("bad\x00", creds, "sha256")
    assert verify_plain_password("s3cret \u00e9", CREDS["sha1"], "sha1")


def test_plain_parse():
    plain = PlainMechanism()
    assert plain.name == "PLAIN"
    assert plain.parse(b"\0juliet\0pencil") == ("", "juliet", "pencil")
    assert plain.parse(b"juliet@example.com\0juliet\0pencil") == ("juliet@example.com", "juliet", "pencil")
    assert plain.parse("\0j\u00fcliet\0p\u00e9ncil".encode()) == ("", "j\u00fcliet", "p\u00e9ncil")


@pytest.mark.parametrize(
    "data",
    [b"", b"juliet", b"\0juliet", b"\0\0pencil", b"\0juliet\0", b"a\0b\0c\0d", b"\0jul\xffiet\0x", b"\0j\x07\0x"],
)
def test_plain_malformed(data):
    with pytest.raises(SaslFailure) as info:
        PlainMechanism().parse(data)
    assert info.value.condition == "malformed-request"


def test_sasl_failure():
    failure = SaslFailure("not-authorized", "nope")
    assert failure.condition == "not-authorized" and failure.text == "nope"
    with pytest.raises(LocalProtocolError):
        SaslFailure("bogus")


def test_saslprep():
    assert saslprep("user") == "user"
    assert saslprep("I\u00adX") == "IX"
    assert saslprep("\u00aa") == "a"
    assert saslprep("a\u00a0b") == "a b"
    assert saslprep("\u0627\u0644\u0639\u0631\u0628\u064a\u0629") == "\u0627\u0644\u0639\u0631\u0628\u064a\u0629"
    for bad in ("\x07", "a\u200eb", "\u0627a", "\ue000"):
        with pytest.raises(ValueError):
            saslprep(bad)
