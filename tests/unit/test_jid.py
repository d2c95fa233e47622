import copy
import pickle

import pytest

from xmppd.protocol.jid import JID, InvalidJID


@pytest.mark.parametrize(
    "text, local, domain, resource",
    [
        ("example.com", None, "example.com", None),
        ("juliet@example.com", "juliet", "example.com", None),
        ("juliet@example.com/balcony", "juliet", "example.com", "balcony"),
        ("example.com/balcony", None, "example.com", "balcony"),
        # The resource is everything after the first slash, '@' and '/' included.
        ("juliet@example.com/foo/bar@baz", "juliet", "example.com", "foo/bar@baz"),
        ("example.com/a@b", None, "example.com", "a@b"),
        ("juliet@example.com/  spaced out ", "juliet", "example.com", "  spaced out "),
        # Case: local and domain fold, the resource does not.
        ("Juliet@Example.COM/Balcony", "juliet", "example.com", "Balcony"),
        # One trailing dot on the domain is dropped.
        ("juliet@example.com./r", "juliet", "example.com", "r"),
        # Unicode: NFKC + case folding in the localpart, NFC in the resource.
        ("\u0130stanbul@example.com", "i\u0307stanbul", "example.com", None),
        ("Ju\u0308liet@example.com", "j\u00fcliet", "example.com", None),
        ("\uff2a\uff55\uff4c\uff49\uff45\uff54@example.com", "juliet", "example.com", None),
        ("juliet@example.com/Ju\u0308", "juliet", "example.com", "J\u00fc"),
        ("juliet@example.com/\u265a", "juliet", "example.com", "\u265a"),
        ("\u03c0@\u00e9xample.com", "\u03c0", "\u00e9xample.com", None),
        ("juliet@\u00c9XAMPLE.com", "juliet", "\u00e9xample.com", None),
        # Address literals.
        ("juliet@127.0.0.1", "juliet", "127.0.0.1", None),
        ("juliet@[::1]/r", "juliet", "[::1]", "r"),
        ("[2001:DB8:0:0::1]", None, "[2001:db8::1]", None),
        ("under_score.example", None, "under_score.example", None),
    ],
)
def test_parse_valid(text, local, domain, resource):
    jid = JID.parse(text)
    assert (jid.local, jid.domain, jid.resource) == (local, domain, resource)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "@example.com",
        "juliet@",
        "juliet@example.com/",
        "example.com/",
        "/resource",
        "juliet@/resource",
        "a@b@example.com",
        "jul iet@example.com",
        "jul\tiet@example.com",
        'jul"iet@example.com',
        "jul&iet@example.com",
        "jul'iet@example.com",
        "jul:iet@example.com",
        "jul<iet@example.com",
        "jul>iet@example.com",
        "jul\x00iet@example.com",
        "jul\u200biet@example.com",  # zero-width space (format character)
        "jul\u3000iet@example.com",  # ideographic space
        "juliet@exa mple.com",
        "juliet@example..com",
        "juliet@.example.com",
        "juliet@.",
        "juliet@-example.com",
        "juliet@example-.com",
        "juliet@exa:mple.com",
        "juliet@exa!mple.com",
        "juliet@" + "a" * 64 + ".com",
        "juliet@[::1",
        "juliet@[not-an-address]",
        "juliet@example.com/bal\x00cony",
        "juliet@example.com/bal\ncony",
        "juliet@example.com/bal\x7fcony",
        "juliet@example.com/\ud800",
        "a" * 1024 + "@example.com",
        "juliet@example.com/" + "r" * 1024,
        "juliet@example.com/" + "\u00e9" * 512,  # 1024 octets of UTF-8
        "\u00e9" * 600 + "@example.com",
    ],
)
def test_parse_invalid(text):
    with pytest.raises(InvalidJID):
        JID.parse(text)


def test_invalid_jid_is_a_value_error():
    assert issubclass(InvalidJID, ValueError)


def test_part_length_limits_are_inclusive():
    assert JID.parse("a" * 1023 + "@example.com").local == "a" * 1023
    assert JID.parse("x@example.com/" + "r" * 1023).resource == "r" * 1023
    label = "a" * 63
    assert JID.parse(f"{label}.{label}.com").domain == f"{label}.{label}.com"


def test_str_round_trip_and_repr():
    for text in ["example.com", "juliet@example.com", "juliet@example.com/balcony", "example.com/r"]:
        assert str(JID.parse(text)) == text
        assert JID.parse(str(JID.parse(text))) == JID.parse(text)
    assert repr(JID.parse("juliet@example.com/r")) == "JID('juliet@example.com/r')"


def test_equality_and_hash_use_normalised_parts():
    a = JID.parse("Juliet@EXAMPLE.com/Balcony")
    b = JID.parse("juliet@example.com./Balcony")
    assert a == b and hash(a) == hash(b)
    assert a != JID.parse("juliet@example.com/balcony")
    assert {a: 1}[b] == 1
    assert a != "juliet@example.com/Balcony"


def test_constructor_normalises():
    jid = JID("Juliet", "Example.COM.", "Balcony")
    assert (jid.local, jid.domain, jid.resource) == ("juliet", "example.com", "Balcony")
    assert jid == JID.parse("juliet@example.com/Balcony")
    assert JID(None, "example.com") == JID.parse("example.com")
    assert JID("", "example.com", "") == JID.parse("example.com")


def test_bare_host_and_with_resource():
    full = JID.parse("juliet@example.com/balcony")
    assert full.bare == JID.parse("juliet@example.com")
    assert full.bare.is_bare and not full.is_bare
    assert not full.is_host and not full.bare.is_host
    assert JID.parse("example.com").is_host
    assert not JID.parse("example.com/r").is_host
    assert full.host == JID.parse("example.com")
    bare = full.bare
    assert bare.bare is bare
    assert bare.with_resource("chamber") == JID.parse("juliet@example.com/chamber")
    assert full.with_resource(None) == bare
    with pytest.raises(InvalidJID):
        bare.with_resource("")
    with pytest.raises(InvalidJID):
        bare.with_resource("bad\x00")


def test_immutable():
    jid = JID.parse("juliet@example.com")
    with pytest.raises(AttributeError):
        jid.local = "romeo"
    with pytest.raises(AttributeError):
        jid.extra = 1
    with pytest.raises(AttributeError):
        del jid.domain


def test_copy_and_pickle():
    jid = JID.parse("juliet@example.com/r")
    assert copy.copy(jid) is jid
    assert copy.deepcopy(jid) is jid
    assert pickle.loads(pickle.dumps(jid)) == jid


def test_parse_is_cached():
    assert JID.parse("cache@example.com/r") is JID.parse("cache@example.com/r")
