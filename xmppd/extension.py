"""Extension base class, declarative registration and the loader (STYLE.md section 2).

An extension module holds one `Extension` subclass. Its decorated methods are hooked
when it loads on a host and unhooked when it unloads; the core gathers its `features`
and `identities` for service discovery.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from xmppd.metrics import LIMIT_REACHED
from xmppd.protocol.errors import ServiceUnavailable, StanzaError
from xmppd.protocol.namespaces import NS_CLIENT
from xmppd.protocol.stanza import error_reply, reply
from xmppd.router import answer_iq

if TYPE_CHECKING:
    from xmppd.host import Host

log = logging.getLogger(__name__)

REPLIED = object()
"""Returned by an iq handler that has sent its reply itself."""

PASS = object()
"""Returned by an iq handler that leaves the iq to the next handler (a disco node it does not own)."""

IQ_TARGETS = ("host", "self", "bare")


def hook(event: str, priority: float = 0):
    """Hook the decorated coroutine method to `event` on the extension's host."""

    def decorate(method):
        method.__dict__.setdefault("_hooks", []).append((event, priority))
        return method

    return decorate


def iq_handler(type_: str, namespace: str, element: str, to=("host", "self"), priority: float = 0):
    """Answer iqs of `type_` whose payload is <element xmlns=namespace/>, sent to `to`.

    `to` names the addressees: "host" (the server), "self" (the sender's own account)
    and "bare" (another account's bare JID). The method returns the reply payload
    (None for an empty result) or raises StanzaError.
    """

    def decorate(method):
        method.__dict__.setdefault("_iq", []).append((type_, namespace, element, tuple(to), priority))
        return method

    return decorate


class Extension:
    name: str = ""  # set by the loader: the module name
    xeps: dict[int, str] = {}  # XEP number -> version implemented
    features: list[str] = []  # disco#info features
    identities: list[tuple[str, str, str]] = []  # (category, type, name)
    account_features: list[str] = []  # disco#info features of every account's bare JID
    account_identities: list[tuple[str, str, str]] = []
    depends: list[str] = []
    Options = None  # frozen dataclass of [extensions.<name>]

    def __init__(self, host: Host, options):
        self.host = host
        self.services = host.services
        self.options = options
        self.log = logging.getLogger(f"xmppd.extensions.{self.name}")
        self._hooked: list[tuple[str, object]] = []

    async def start(self) -> None:
        """Open stores, start background tasks. Called after every hook is registered."""

    async def stop(self) -> None:
        """Stop background tasks."""

    def disco_forms(self) -> list:
        """XEP-0128 data forms to add to the host's disco#info."""
        return []

    def stream_features(self, authenticated: bool) -> list[bytes]:
        """Serialized <stream:features/> children to offer before/after authentication."""
        return []

    def limit_reached(self, option: str, amount: int = 1) -> str:
        """Count what `option` of [extensions.<name>] refused (or dropped) in
        xmppd_limit_reached_total; returns the option's key, for the error's <text/>."""
        key = f"extensions.{self.name}.{option}"
        self.services.metrics.count(LIMIT_REACHED, key, amount=amount)
        return key


class ComponentService(Extension):
    """The extension that is the service of a component domain of its own
    (upload.<domain>, pubsub.<domain>): an iq to the domain fires its namespaced event,
    and a message with a body is refused, as one to the server is."""

    @hook("iq/host")
    async def iq_to_service(self, stanza) -> bool:
        return await answer_iq(self.host, stanza)

    @hook("message/host", priority=-1)
    @hook("message/bare", priority=-1)
    @hook("message/full", priority=-1)
    async def refuse_message(self, stanza) -> bool:
        if (
            stanza.type not in ("error", "groupchat", "headline")
            and stanza.element.find(f"{{{NS_CLIENT}}}body") is not None
        ):
            raise ServiceUnavailable()
        return True


def register(extension: Extension) -> None:
    """Hook every decorated method of `extension` on its host's bus."""
    cls = type(extension)
    for attribute in dir(cls):
        method = getattr(cls, attribute, None)
        for event, priority in getattr(method, "_hooks", ()):
            _add(extension, event, getattr(extension, attribute), priority)
        for type_, namespace, element, targets, priority in getattr(method, "_iq", ()):
            if not any(f.startswith(namespace) for f in extension.features):
                log.debug("event=iq-namespace-not-advertised extension=%s namespace=%s", extension.name, namespace)
            handler = _iq_wrapper(extension, getattr(extension, attribute))
            for target in targets:
                _add(extension, f"iq-{type_}/{target}/{namespace}:{element}", handler, priority)


def unregister(extension: Extension) -> None:
    for event, handler in extension._hooked:
        extension.host.bus.unhook(event, handler)
    extension._hooked.clear()


def _add(extension: Extension, event: str, handler, priority: float) -> None:
    extension.host.bus.hook(event, handler, priority)
    extension._hooked.append((event, handler))


def _iq_wrapper(extension: Extension, method):
    async def answer(stanza) -> bool:
        try:
            payload = await method(stanza)
        except StanzaError as error:
            await extension.host.send(error_reply(stanza.element, error))
            return True
        if payload is PASS:
            return False
        if payload is not REPLIED:
            await extension.host.send(reply(stanza.element, payload))
        return True

    answer.__qualname__ = method.__qualname__
    return answer


def extension_class(name: str) -> type[Extension]:
    """The Extension subclass of the module xmppd.extensions.<name>."""
    module = importlib.import_module(f"xmppd.extensions.{name}")
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Extension)
        and value is not Extension
        and value.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise ImportError(f"xmppd.extensions.{name} must define exactly one Extension class")
    cls = found[0]
    cls.name = name
    return cls
