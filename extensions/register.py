"""XEP-0077 In-Band Registration: create an account before logging in, change one's
password, cancel one's account.

Registration is off unless `allow_registration`; when on, it is offered as the stream
feature <register/> on a stream that is not yet authenticated (so after STARTTLS, or in
plain text from loopback where the server allows it), with the legacy <username/> and
<password/> fields and a data form (FORM_TYPE jabber:iq:register) holding the same ones.
Registrations from one address are throttled. A logged-in user may change the password
(section 3.3) and, when `allow_unregister`, remove the account (section 3.2), whether
registration is open or not.

Hooks `unauthenticated-iq/jabber:iq:register:query` (fired by the c2s connection before
SASL) and iq get/set of jabber:iq:register to the server or one's own account. Fires
nothing itself; removing an account fires the core's `user-deleted`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from xmppd import accounts, forms
from xmppd.extension import REPLIED, Extension, hook, iq_handler
from xmppd.protocol.errors import (
    BadRequest,
    Conflict,
    NotAcceptable,
    NotAllowed,
    RegistrationRequired,
    ServiceUnavailable,
    UnexpectedRequest,
)
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.stanza import make_element, reply, sub_element
from xmppd.protocol.stream import serialize

NS_REGISTER = "jabber:iq:register"
NS_REGISTER_FEATURE = "http://jabber.org/features/iq-register"
MAX_THROTTLED_ADDRESSES = 10000  # bound the memory an address scan can take


class Register(Extension):
    xeps = {77: "2.4"}
    features = [NS_REGISTER]

    @dataclass(frozen=True)
    class Options:
        allow_registration: bool = False  # anyone may create an account in-band
        min_password_length: int = 8  # for registrations and in-band password changes
        registration_throttle_seconds: float = 60.0  # between two registrations from one address; 0: no limit
        allow_unregister: bool = True  # a logged-in user may delete the account (<remove/>)
        instructions: str = "Choose a username and password for use with this server."

        def validate(self, where):
            where.check("min_password_length", self.min_password_length >= 1, "must be at least 1")
            where.check(
                "registration_throttle_seconds", self.registration_throttle_seconds >= 0, "must not be negative"
            )

    def __init__(self, host, options):
        super().__init__(host, options)
        self.last_registration: dict[str, float] = {}  # peer address -> monotonic time

    def stream_features(self, authenticated: bool) -> list[bytes]:
        if authenticated or not self.options.allow_registration:
            return []
        return [f"<register xmlns='{NS_REGISTER_FEATURE}'/>".encode()]

    # ------------------------------------------------------------- before authentication

    @hook(f"unauthenticated-iq/{NS_REGISTER}:query")
    async def register_before_login(self, event) -> bool:
        iq = event.element
        if not self.options.allow_registration:
            raise ServiceUnavailable()  # section 3.1: the host does not support registration
        if iq.get("type") == "get":
            payload = self._registration_form()
        else:
            query = iq[0]
            if query.find(f"{{{NS_REGISTER}}}remove") is not None:
                raise UnexpectedRequest(text="log in to cancel a registration")
            await self._create_account(query, event.connection.peer)
            payload = None
        event.connection.write(serialize(reply(iq, payload)))
        return True

    def _registration_form(self):
        query = make_element(f"{{{NS_REGISTER}}}query")
        sub_element(query, f"{{{NS_REGISTER}}}instructions", text=self.options.instructions)
        sub_element(query, f"{{{NS_REGISTER}}}username")
        sub_element(query, f"{{{NS_REGISTER}}}password")
        query.append(
            forms.build(
                "form",
                title="Account registration",
                instructions=self.options.instructions,
                form_type=NS_REGISTER,
                fields=self._form_fields(),
            )
        )
        return query

    def _form_fields(self) -> list[forms.Field]:
        return [
            forms.Field("username", "text-single", "Username", required=True),
            forms.Field("password", "text-private", "Password", required=True),
        ]

    async def _create_account(self, query, peer: str) -> None:
        username, password = self._submitted(query)
        if not username or not password:
            raise NotAcceptable(text="a username and a password are required")
        local = self._local_part(username)
        self._check_password(password)
        self._check_throttle(peer)
        if not await accounts.create_user(self.host, local, password):
            raise Conflict(text="this username is taken")
        self.last_registration[peer] = time.monotonic()
        self.log.info("event=user-registered jid=%s@%s peer=%s", local, self.host.domain, peer)

    def _submitted(self, query) -> tuple[str | None, str | None]:
        """(username, password) from the data form when there is one (section 4), else
        from the legacy fields."""
        x = forms.find(query)
        if x is not None:
            data = forms.parse(x, form_type=NS_REGISTER)
            return forms.single(data, "username"), (data.get("password") or [None])[0]
        return query.findtext(f"{{{NS_REGISTER}}}username"), query.findtext(f"{{{NS_REGISTER}}}password")

    def _local_part(self, username: str) -> str:
        try:
            jid = JID.parse(f"{username.strip()}@{self.host.domain}")
        except InvalidJID:
            jid = None
        if jid is None or jid.local is None or jid.domain != self.host.domain or jid.resource is not None:
            raise NotAcceptable(text="this username is not valid")
        return jid.local

    def _check_password(self, password: str) -> None:
        if len(password) < self.options.min_password_length:
            raise NotAcceptable(text=f"the password needs at least {self.options.min_password_length} characters")

    def _check_throttle(self, peer: str) -> None:
        delay = self.options.registration_throttle_seconds
        if not delay:
            return
        now = time.monotonic()
        last = self.last_registration.get(peer)
        if last is not None and now - last < delay:
            raise NotAcceptable(type="wait", text="too many registrations from your address; try again later")
        if len(self.last_registration) >= MAX_THROTTLED_ADDRESSES:
            self.last_registration = {a: t for a, t in self.last_registration.items() if now - t < delay}

    # ------------------------------------------------------------- logged in

    @iq_handler("get", NS_REGISTER, "query", to=("host", "self"))
    async def registration_info(self, iq):
        """Section 3.1: a registered entity gets <registered/> and what is on file."""
        query = make_element(f"{{{NS_REGISTER}}}query")
        sub_element(
            query,
            f"{{{NS_REGISTER}}}instructions",
            text="You are registered. Send a new password to change it, or <remove/> to delete the account.",
        )
        sub_element(query, f"{{{NS_REGISTER}}}registered")
        sub_element(query, f"{{{NS_REGISTER}}}username", text=iq.from_.local)
        sub_element(query, f"{{{NS_REGISTER}}}password")
        return query

    @iq_handler("set", NS_REGISTER, "query", to=("host", "self"))
    async def change_registration(self, iq):
        query = iq.element[0]
        if query.find(f"{{{NS_REGISTER}}}remove") is not None:
            return await self._remove_account(iq, query)
        username, password = self._submitted(query)
        if username is None or password is None:
            raise BadRequest(text="a password change needs <username/> and <password/>")
        if self._local_part(username) != iq.from_.local:
            raise BadRequest(text="you can change your own password only")
        if not password:  # section 3.3: never set an empty password
            raise BadRequest(text="the password must not be empty")
        self._check_password(password)
        if not await accounts.set_password(self.host, iq.from_.local, password):
            raise RegistrationRequired()
        self.log.info("event=password-changed jid=%s", iq.from_.bare)
        return None

    async def _remove_account(self, iq, query):
        """Section 3.2: reply, then close every session of the account with not-authorized."""
        if len([child for child in query if isinstance(child.tag, str)]) != 1:
            raise BadRequest(text="<remove/> must be the only child of <query/>")
        if not self.options.allow_unregister:
            raise NotAllowed(text="accounts cannot be deleted in-band on this server")
        if not await accounts.delete_user(self.host, iq.from_.local, reply=reply(iq.element)):
            raise RegistrationRequired()
        self.log.info("event=user-unregistered jid=%s", iq.from_.bare)
        return REPLIED
