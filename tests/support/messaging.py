"""Helpers for the one-to-one messaging tests (carbons, archive, receipts and markers,
blocking): users with several resources, carbon copies, archive queries."""

from __future__ import annotations

import itertools

from lxml import etree

from tests.support.inbox import MESSAGE, PRESENCE, online, presence
from tests.support.muc import User, form

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_SID = "urn:xmpp:sid:0"
NS_RECEIPTS = "urn:xmpp:receipts"
NS_MARKERS = "urn:xmpp:chat-markers:0"
NS_HINTS = "urn:xmpp:hints"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
BODY = "{jabber:client}body"
FORWARDED_MESSAGE = f"{{{NS_FORWARD}}}forwarded/{{jabber:client}}message"

_ids = itertools.count()


async def connect(server, jid: str, resource: str, *, priority: int = 0, carbons: bool = False) -> User:
    """A logged-in resource with initial presence of `priority`, carbons enabled if asked."""
    client, inbox = await online(
        server, jid, resource, roster=True, presence_xml=f"<presence><priority>{priority}</priority></presence>"
    )
    user = User(str(client.boundjid), client, inbox)
    if carbons:
        result = await user.iq("set", bare(user.jid), f"<enable xmlns='{NS_CARBONS}'/>")
        assert result.get("type") == "result", etree.tostring(result)
    return user


def bare(jid: str) -> str:
    return jid.split("/")[0]


def send(
    user: User, to: str, payload: str = "", *, body: str | None = None, type_: str = "chat", msg_id: str | None = None
) -> str:
    """Send a message; its id."""
    msg_id = msg_id or f"msg{next(_ids)}"
    inner = (f"<body>{body}</body>" if body is not None else "") + payload
    user.client.send_raw(f"<message to='{to}' type='{type_}' id='{msg_id}'>{inner}</message>")
    return msg_id


def with_id(msg_id: str):
    """A predicate: a message (not an error) with this id."""
    return lambda s: s.tag == MESSAGE and s.get("id") == msg_id and s.get("type") != "error"


def error_to(msg_id: str):
    return lambda s: s.get("id") == msg_id and s.get("type") == "error"


def carbon(direction: str, msg_id: str | None = None):
    """A predicate: a <sent/> or <received/> carbon copy (of the message `msg_id`)."""

    def match(stanza):
        if stanza.tag != MESSAGE:
            return False
        inner = stanza.find(f"{{{NS_CARBONS}}}{direction}/{FORWARDED_MESSAGE}")
        return inner is not None and (msg_id is None or inner.get("id") == msg_id)

    return match


def forwarded(stanza: etree._Element) -> etree._Element:
    """The message inside a carbon copy or an archive result."""
    found = stanza.find(f".//{FORWARDED_MESSAGE}")
    assert found is not None, etree.tostring(stanza)
    return found


def carbons_of(user: User, direction: str | None = None) -> list[etree._Element]:
    """The carbon copies `user` received so far."""
    directions = (direction,) if direction else ("sent", "received")
    return [s for s in user.inbox.stanzas if any(carbon(d)(s) for d in directions)]


def stanza_id(message: etree._Element, by: str) -> str | None:
    for stamp in message.iterfind(f"{{{NS_SID}}}stanza-id"):
        if stamp.get("by") == by:
            return stamp.get("id")
    return None


async def round_trip(user: User) -> None:
    """Everything the server sent `user` because of its earlier stanzas has arrived."""
    result = await user.iq("get", user.jid.split("@")[1].split("/")[0], "<ping xmlns='urn:xmpp:ping'/>")
    assert result.get("type") == "result"


async def archive(user: User, fields: dict | None = None, rsm: str = "", *, flip: bool = False, to: str | None = None):
    """A MAM query of `user`'s own archive (or of `to`): (results, <fin/>), or the error
    iq. Results are (archive id, forwarded message, result message) in arrival order."""
    query_id = f"q{next(_ids)}"
    payload = form(NS_MAM, fields) if fields is not None else ""
    payload += f"<set xmlns='{NS_RSM}'>{rsm}</set>" if rsm else ""
    payload += "<flip-page/>" if flip else ""
    answer = await user.iq(
        "set", to or bare(user.jid), f"<query xmlns='{NS_MAM}' queryid='{query_id}'>{payload}</query>"
    )
    if answer.get("type") == "error":
        return answer
    results = [
        (s.find(f"{{{NS_MAM}}}result").get("id"), forwarded(s), s)
        for s in user.inbox.received(
            lambda s: (
                s.tag == MESSAGE
                and s.find(f"{{{NS_MAM}}}result") is not None
                and s.find(f"{{{NS_MAM}}}result").get("queryid") == query_id
            )
        )
    ]
    return results, answer.find(f"{{{NS_MAM}}}fin")


def bodies(results) -> list[str]:
    return [message.findtext(BODY) for _, message, _ in results]


def rsm(fin: etree._Element, tag: str) -> str | None:
    return fin.findtext(f"{{{NS_RSM}}}set/{{{NS_RSM}}}{tag}")


async def subscribe_both(a: User, b: User) -> None:
    """Mutual presence subscription between two users (RFC 6121 3.1), both online."""
    for asker, asked in ((a, b), (b, a)):
        await asker.send(f"<presence to='{bare(asked.jid)}' type='subscribe'/>")
        await asked.inbox.wait(presence("subscribe", from_=bare(asker.jid)))
        await asked.send(f"<presence to='{bare(asker.jid)}' type='subscribed'/>")
        await asker.inbox.wait(lambda s: s.tag == PRESENCE and s.get("from") == asked.jid and s.get("type") is None)
