"""XEP-0357 Push Notifications: wake a user's sleeping mobile client through its app server.

A client enables notifications (an iq set to its own account) for an app server, any
XMPP entity, and a node on it, with an optional publish-options form (the app server's
credentials); the registrations are kept per user in the key-value store "push". When a
message worth a notification (a body, an encrypted payload, a call proposal; never a
chat state, a receipt or a carbon of one's own message) arrives for a user whose session
hibernates (XEP-0198, waiting for its client to resume) or who is offline (the message
was stored), the server publishes a <notification/> to each registration, as an iq set
from the user's bare JID. Its urn:xmpp:push:summary form holds the fields the config
allows: message-count (messages since a client of the user was last connected),
last-message-sender, last-message-body; the publish-options go with it as given. The
publishes run in the background: a slow app server never holds up a message.

Registrations made on a session that is connected right now are skipped: that client
gets the message itself. An error answer disables the registration (section 8.1),
unless its type is 'wait' (transient); a timeout does not.

Errors: <enable/> without 'jid' or 'node', <disable/> without 'jid', or a form that is
not a submitted publish-options form: bad-request; an unparsable 'jid': jid-malformed;
more than `max_registrations`: resource-constraint. Nothing stored changes on an error.

Hooks: iq-set/self/urn:xmpp:push:0:enable|disable, message-stored-offline (offline.py,
and backlog.py for a hibernating resource), smacks-hibernation-start (smacks.py),
resource-bound and smacks-hibernation-end (the unread count starts again), user-deleted.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass

from lxml import etree

from xmppd import forms
from xmppd.extension import Extension, hook, iq_handler
from xmppd.hints import BODY, CARBON_SENT, carried_message, namespace_of
from xmppd.protocol.errors import BadRequest, JidMalformed, ResourceConstraint, StanzaError
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.namespaces import NS_CLIENT
from xmppd.protocol.stanza import IQ, MESSAGE, from_storage, make_element, sub_element, to_storage
from xmppd.router import RETURNED

NS_PUSH = "urn:xmpp:push:0"
NS_PUSH_SUMMARY = "urn:xmpp:push:summary"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
NS_MAM = "urn:xmpp:mam:2"
ERROR = f"{{{NS_CLIENT}}}error"
MAM_RESULT = f"{{{NS_MAM}}}result"
# A child in one of these makes a message without a body worth waking the user for.
NOTABLE_NAMESPACES = frozenset(
    (
        "eu.siacs.conversations.axolotl",  # OMEMO (XEP-0384 0.3)
        "urn:xmpp:omemo:2",  # OMEMO (XEP-0384 0.8+)
        "urn:xmpp:jingle-message:0",  # XEP-0353 call proposals
        "urn:xmpp:jingle-message:1",
    )
)


def is_notable(element: etree._Element) -> bool:
    """A message the user would want to be woken for."""
    if element.tag != MESSAGE or element.get("type") in ("error", "headline"):
        return False
    if element.find(CARBON_SENT) is not None or element.find(MAM_RESULT) is not None:
        return False  # the user's own words, or history asked for
    message = carried_message(element)
    if (message.findtext(BODY) or "").strip():
        return True
    return any(namespace_of(child) in NOTABLE_NAMESPACES for child in message)


def registration_key(service: str, node: str) -> str:
    return f"{service} {node}"  # a JID has no space: the first one splits


def split_key(key: str) -> tuple[str, str]:
    service, node = key.split(" ", 1)
    return service, node


@dataclass(frozen=True)
class Summary:
    count: int
    sender: str | None
    body: str | None


class PushNotifications(Extension):
    xeps = {357: "0.4.1"}
    account_features = [NS_PUSH]  # on the account's bare JID (section 5.1), not the server's

    @dataclass(frozen=True)
    class Options:
        include_count: bool = True  # message-count in the summary
        include_sender: bool = False  # last-message-sender (told to the app server!)
        include_body: bool = False  # last-message-body (told to the app server!)
        max_registrations: int = 20  # per user
        timeout: float = 30.0  # seconds to wait for an app server's answer

        def validate(self, where):
            where.check("max_registrations", self.max_registrations > 0, "must be positive")
            where.check("timeout", self.timeout > 0, "must be positive")

    def __init__(self, host, options):
        super().__init__(host, options)
        self.unread: collections.Counter[str] = collections.Counter()

    async def start(self) -> None:
        self.store = self.host.open_keyvalue("push")

    # ------------------------------------------------------------- enable, disable

    @iq_handler("set", NS_PUSH, "enable", to=("self",))
    async def enable(self, stanza):
        request = stanza.element[0]
        service, node = self._service(request), request.get("node")
        if not node:
            raise BadRequest(text="'node' is required")
        options = b""
        if len(request):
            form = forms.find(request, NS_PUBLISH_OPTIONS)
            if form is None or len(request) > 1:
                raise BadRequest(text=f"only a {NS_PUBLISH_OPTIONS} form may come with <enable/>")
            forms.parse(form, form_type=NS_PUBLISH_OPTIONS)
            options = to_storage(form)
        owner, key = str(stanza.from_.bare), registration_key(str(service), node)
        keys = await self.store.keys(owner)
        if key not in keys and len(keys) >= self.options.max_registrations:
            raise ResourceConstraint(text="too many push registrations")
        await self.store.set(owner, key, options)
        if stanza.origin is not None:
            stanza.origin.meta.setdefault(self.name, set()).add(key)
        return None

    @iq_handler("set", NS_PUSH, "disable", to=("self",))
    async def disable(self, stanza):
        request = stanza.element[0]
        service, node = str(self._service(request)), request.get("node")
        owner = str(stanza.from_.bare)
        for key in await self.store.keys(owner):
            if split_key(key)[0] == service and (node is None or split_key(key)[1] == node):
                await self.store.delete(owner, key)
        return None

    @staticmethod
    def _service(request) -> JID:
        if not request.get("jid"):
            raise BadRequest(text="'jid' is required")
        try:
            return JID.parse(request.get("jid"))
        except InvalidJID:
            raise JidMalformed() from None

    @hook("user-deleted")
    async def forget_user(self, jid: JID) -> None:
        await self.store.delete(str(jid))
        self.unread.pop(str(jid), None)

    # ------------------------------------------------------------- when to push

    @hook("message-stored-offline")
    async def stored_offline(self, stanza) -> None:
        if not stanza.meta.get(RETURNED) and is_notable(stanza.element):  # RETURNED: pushed already
            self._wake(stanza.to.bare, [stanza.element])

    @hook("smacks-hibernation-start")
    async def hibernating(self, event) -> None:
        notable = [element for element in event.stanzas if is_notable(element)]
        if notable:
            self._wake(event.session.jid.bare, notable)

    @hook("resource-bound")
    @hook("smacks-hibernation-end")
    async def user_is_back(self, session) -> None:
        self.unread.pop(str(session.jid.bare), None)

    def _wake(self, owner: JID, messages: list) -> None:
        self.unread[str(owner)] += len(messages)
        last = messages[-1]
        message = carried_message(last)
        summary = Summary(self.unread[str(owner)], message.get("from"), message.findtext(BODY))
        self.services.tasks.spawn(self._publish_all(owner, summary))

    # ------------------------------------------------------------- publishing

    async def _publish_all(self, owner: JID, summary: Summary) -> None:
        connected = {
            key
            for session in self.host.sessions_of(owner.local)
            if session.connection is not None
            for key in session.meta.get(self.name, ())
        }
        keys = [key for key in await self.store.keys(str(owner)) if key not in connected]
        await asyncio.gather(*(self._publish(owner, key, summary) for key in keys))

    async def _publish(self, owner: JID, key: str, summary: Summary) -> None:
        service, node = split_key(key)
        options = await self.store.get(str(owner), key)
        if options is None:
            return  # disabled meanwhile
        iq = make_element(IQ, {"type": "set", "from": str(owner), "to": service})
        pubsub = sub_element(iq, f"{{{NS_PUBSUB}}}pubsub")
        item = sub_element(sub_element(pubsub, f"{{{NS_PUBSUB}}}publish", {"node": node}), f"{{{NS_PUBSUB}}}item")
        sub_element(item, f"{{{NS_PUSH}}}notification").append(self.summary_form(summary))
        if options:
            sub_element(pubsub, f"{{{NS_PUBSUB}}}publish-options").append(from_storage(options))
        try:
            answer = await self.host.request(iq, self.options.timeout)
        except TimeoutError:
            self.log.info("event=push-timeout owner=%s service=%s", owner, service)
            return
        if answer.get("type") != "error":
            return
        error = answer.find(ERROR)
        condition = StanzaError.from_element(error) if error is not None else None
        if condition is not None and condition.type == "wait":
            return
        await self.store.delete(str(owner), key)
        self.log.info(
            "event=push-disabled owner=%s service=%s node=%s error=%s",
            owner,
            service,
            node,
            condition.condition if condition else "none",
        )

    def summary_form(self, summary: Summary) -> etree._Element:
        fields = []
        if self.options.include_count:
            fields.append(forms.Field("message-count", None, values=(str(summary.count),)))
        if self.options.include_sender and summary.sender:
            fields.append(forms.Field("last-message-sender", None, values=(summary.sender,)))
        if self.options.include_body and summary.body:
            fields.append(forms.Field("last-message-body", None, values=(summary.body,)))
        return forms.build("submit", form_type=NS_PUSH_SUMMARY, fields=fields)
