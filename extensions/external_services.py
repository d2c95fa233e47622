"""XEP-0215 External Service Discovery: the STUN and TURN servers a client uses for calls
(Jingle ICE-UDP), with short-lived TURN credentials.

A restricted service gets credentials made from a secret shared with the TURN server,
the TURN REST API scheme that coturn's `use-auth-secret` checks: username
"<expiry unix time>:<bare JID>", password base64(HMAC-SHA1(secret, username)); they are
valid until the expiry, `credential_lifetime` seconds after the request, and no state is
kept. They come in the `services` answer (with 'restricted' and 'expires') and in the
answer to a `credentials` request for one service (section 3.3). Only users of the host
may ask (forbidden otherwise): the list is what the operator gives its own users.

Hooks: iq-get/host/urn:xmpp:extdisco:2:services, iq-get/host/urn:xmpp:extdisco:2:credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field

from xmppd.config import Where, build
from xmppd.extension import Extension, iq_handler
from xmppd.protocol.errors import BadRequest, Forbidden, ItemNotFound
from xmppd.protocol.stanza import make_element, sub_element

NS_EXTDISCO = "urn:xmpp:extdisco:2"
SERVICE_TYPES = ("stun", "stuns", "turn", "turns")  # the XMPP Registrar's, for calls
TRANSPORTS = ("udp", "tcp")


@dataclass(frozen=True)
class Service:
    """One [[extensions.external_services.services]] table."""

    type: str = "stun"
    host: str = ""  # a domain name or an IP address
    port: int = 0  # 0: not given (the type's default port)
    transport: str = "udp"
    restricted: bool = False  # needs credentials, made from `secret`
    name: str = ""  # a label for people; "": none

    def validate(self, where):
        where.one_of("type", self.type, SERVICE_TYPES)
        where.one_of("transport", self.transport, TRANSPORTS)
        where.check("host", bool(self.host), "must be a domain name or an IP address")
        where.check("port", 0 <= self.port < 65536, "must be a port number (0-65535)")


def turn_credentials(secret: str, user: str, expires: int) -> tuple[str, str]:
    """The TURN REST API username and password for `user`, valid until `expires`."""
    username = f"{expires}:{user}"
    password = base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    return username, password


class ExternalServices(Extension):
    xeps = {215: "1.0.0"}
    features = [NS_EXTDISCO]

    @dataclass(frozen=True)
    class Options:
        services: tuple[dict, ...] = ()  # Service tables
        secret: str = field(default="", repr=False)  # coturn's static-auth-secret
        credential_lifetime: float = 86400.0  # seconds

        def validate(self, where):
            for index, table in enumerate(self.services):
                service = build(Service, table, Where(where.source, where.key(f"services[{index}]")))
                where.check(
                    f"services[{index}].restricted",
                    not service.restricted or self.secret,
                    "needs the shared secret (secret) to make credentials",
                )
            where.check("secret", not self.secret or len(self.secret) >= 16, "must be at least 16 characters")
            where.check("credential_lifetime", self.credential_lifetime > 0, "must be positive")

    async def start(self) -> None:
        where = Where(self.services.config.source, f"extensions.{self.name}")
        self.external = [
            build(Service, table, Where(where.source, where.key(f"services[{index}]")))
            for index, table in enumerate(self.options.services)
        ]

    @iq_handler("get", NS_EXTDISCO, "services", to=("host",))
    async def list_services(self, iq):
        user = self._user(iq)
        wanted = iq.element[0].get("type")
        answer = make_element(f"{{{NS_EXTDISCO}}}services", {"type": wanted})
        for service in self.external:
            if wanted is None or service.type == wanted:
                self._add(answer, service, user)
        return answer

    @iq_handler("get", NS_EXTDISCO, "credentials", to=("host",))
    async def credentials(self, iq):
        user = self._user(iq)
        asked = iq.element[0].find(f"{{{NS_EXTDISCO}}}service")
        if asked is None or not asked.get("host") or not asked.get("type"):
            raise BadRequest(text="a <service/> with 'host' and 'type' is needed")
        port = asked.get("port")
        answer = make_element(f"{{{NS_EXTDISCO}}}credentials")
        for service in self.external:
            if (
                service.restricted
                and service.host == asked.get("host")
                and service.type == asked.get("type")
                and (port is None or port == str(service.port))
            ):
                self._add(answer, service, user)
        if not len(answer):
            raise ItemNotFound(text="no service with credentials has that host and type")
        return answer

    def _user(self, iq) -> str:
        if iq.from_.domain != self.host.domain or iq.from_.local is None:
            raise Forbidden(text="only users of this server may discover its services")
        return str(iq.from_.bare)

    def _add(self, parent, service: Service, user: str) -> None:
        attributes = {
            "type": service.type,
            "host": service.host,
            "port": str(service.port) if service.port else None,
            "transport": service.transport,
            "name": service.name or None,
        }
        if service.restricted:
            expires = int(time.time() + self.options.credential_lifetime)
            attributes["username"], attributes["password"] = turn_credentials(self.options.secret, user, expires)
            attributes["expires"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))  # XEP-0082
            attributes["restricted"] = "1"
        sub_element(parent, f"{{{NS_EXTDISCO}}}service", attributes)
