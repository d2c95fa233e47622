"""XEP-0357 notification summaries: only the fields the config allows reach the app server."""

import types

from xmppd.extensions.push import PushNotifications, Summary, is_notable
from xmppd.protocol.stanza import from_storage

NS_DATA = "jabber:x:data"


def fields(options, summary):
    extension = PushNotifications(types.SimpleNamespace(services=None), options)
    form = extension.summary_form(summary)
    assert form.get("type") == "submit"
    return {field.get("var"): field.findtext(f"{{{NS_DATA}}}value") for field in form}


def test_defaults_tell_the_app_server_the_count_only():
    assert fields(PushNotifications.Options(), Summary(3, "juliet@example.com/balcony", "secret words")) == {
        "FORM_TYPE": "urn:xmpp:push:summary",
        "message-count": "3",
    }


def test_sender_and_body_when_allowed():
    options = PushNotifications.Options(include_count=False, include_sender=True, include_body=True)
    assert fields(options, Summary(1, "juliet@example.com/balcony", "hi")) == {
        "FORM_TYPE": "urn:xmpp:push:summary",
        "last-message-sender": "juliet@example.com/balcony",
        "last-message-body": "hi",
    }


def message(payload, type_="chat"):
    return from_storage(f"<message xmlns='jabber:client' type='{type_}' from='a@b/c'>{payload}</message>".encode())


def test_what_wakes_the_user():
    assert is_notable(message("<body>hello</body>"))
    assert is_notable(message("<encrypted xmlns='eu.siacs.conversations.axolotl'/>"))
    assert not is_notable(message("<body>  </body>"))
    assert not is_notable(message("<composing xmlns='http://jabber.org/protocol/chatstates'/>"))
    assert not is_notable(message("<received xmlns='urn:xmpp:receipts' id='x'/>"))
    assert not is_notable(message("<body>news</body>", "headline"))
    assert not is_notable(
        message(
            "<sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
            "<message xmlns='jabber:client'><body>mine</body></message></forwarded></sent>"
        )
    )
    assert is_notable(
        message(
            "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
            "<message xmlns='jabber:client'><body>theirs</body></message></forwarded></received>"
        )
    )
