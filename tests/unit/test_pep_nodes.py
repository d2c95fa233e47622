"""PEP building blocks without a server: XEP-0115 verification strings, node
configuration and XEP-0223 preconditions."""

import pytest
from lxml import etree

from xmppd.caps import verification_string
from xmppd.extensions.pep import caps
from xmppd.protocol.errors import Conflict, NotAcceptable
from xmppd.pubsub import NS_PUBSUB_ERRORS, nodes

DISCO = "http://jabber.org/protocol/disco#info"


def query(xml: str):
    return etree.fromstring(f"<query xmlns='{DISCO}'>{xml}</query>")


SIMPLE = query(
    "<identity category='client' name='Exodus 0.9.1' type='pc'/>"
    "<feature var='http://jabber.org/protocol/caps'/>"
    "<feature var='http://jabber.org/protocol/disco#info'/>"
    "<feature var='http://jabber.org/protocol/disco#items'/>"
    "<feature var='http://jabber.org/protocol/muc'/>"
)

COMPLEX = query(
    "<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>"
    "<identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>"
    "<feature var='http://jabber.org/protocol/caps'/><feature var='http://jabber.org/protocol/disco#info'/>"
    "<feature var='http://jabber.org/protocol/disco#items'/><feature var='http://jabber.org/protocol/muc'/>"
    "<x xmlns='jabber:x:data' type='result'>"
    "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>"
    "<field var='ip_version'><value>ipv4</value><value>ipv6</value></field>"
    "<field var='os'><value>Mac</value></field><field var='os_version'><value>10.5.1</value></field>"
    "<field var='software'><value>Psi</value></field><field var='software_version'><value>0.11</value></field>"
    "</x>"
)


def test_verification_strings_of_the_xep_0115_examples():
    assert verification_string(SIMPLE, "sha-1") == "QgayPKawpkPSDYmwT/WM94uAlu0="
    assert verification_string(COMPLEX, "sha-1") == "q07IKJEyjvHSyhy//CH0CxmKi8w="


def test_unknown_hashes_and_duplicates_are_not_verified():
    assert verification_string(SIMPLE, "md5") is None
    doubled = query("<feature var='urn:a'/><feature var='urn:a'/>")
    assert verification_string(doubled, "sha-1") is None


def test_interests_are_the_notify_features():
    features = caps.features_of(query("<feature var='urn:a+notify'/><feature var='urn:b'/>"))
    assert caps.interests(features) == {"urn:a"}


def test_cache_drops_the_least_recently_used():
    cache = caps.CapsCache(2)
    cache.put("a", frozenset({"1"}))
    cache.put("b", frozenset({"2"}))
    assert cache.get("a") == {"1"}
    cache.put("c", frozenset({"3"}))
    assert cache.get("b") is None and cache.get("a") == {"1"}


def test_options_are_read_and_checked():
    options = nodes.read_options(
        {
            "FORM_TYPE": [nodes.PUBLISH_OPTIONS],
            "pubsub#access_model": ["open"],
            "pubsub#persist_items": ["1"],
            "pubsub#max_items": ["max"],
            "pubsub#unknown": ["x"],
        },
        limit=50,
    )
    assert options == {"access_model": "open", "persist_items": True, "max_items": "max", "unknown": None}
    for bad in (
        {"pubsub#max_items": ["0"]},
        {"pubsub#max_items": ["51"]},
        {"pubsub#persist_items": ["maybe"]},
        {"pubsub#send_last_published_item": ["sometimes"]},
    ):
        with pytest.raises(NotAcceptable):
            nodes.read_options(bad, limit=50)
    with pytest.raises(NotAcceptable) as refused:
        nodes.read_options({"pubsub#access_model": ["authorize"]}, limit=50)
    assert refused.value.app_condition.tag == f"{{{NS_PUBSUB_ERRORS}}}unsupported-access-model"


def test_preconditions_compare_with_the_node_configuration():
    config = nodes.configure(nodes.new_config(), {"access_model": "open", "max_items": 50})
    nodes.check_preconditions(config, {"access_model": "open", "max_items": "max", "persist_items": True}, limit=50)
    for unmet in ({"access_model": "presence"}, {"max_items": 1}, {"unknown": None}):
        with pytest.raises(Conflict) as refused:
            nodes.check_preconditions(config, unmet, limit=50)
        assert refused.value.app_condition.tag == f"{{{NS_PUBSUB_ERRORS}}}precondition-not-met"


def test_max_items_is_bounded_by_the_service():
    assert nodes.max_items({"max_items": "max"}, 20) == 20
    assert nodes.max_items({"max_items": 500}, 20) == 20
    assert nodes.max_items(nodes.new_config(), 20) == 1
