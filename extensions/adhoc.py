"""XEP-0050 Ad-Hoc Commands, with the XEP-0133 Service Administration commands.

Commands are disco items of the node http://jabber.org/protocol/commands on the host,
listed only to requesters who may run them. A command runs in stages: each stage either
shows a data form (status executing, with the allowed <actions/>) or completes; a
session id ties the stages of one run together, for one requester, until it completes,
is cancelled, or times out. Other extensions offer their own commands with
`host.extensions["adhoc"].add(Command(...))`.

The XEP-0133 commands (add-user, delete-user, change-user-password, get-online-users-num,
get-online-users-list, announce) are for the host's admins (`[[hosts]] admins`); third-
party test suites create their accounts with add-user, so its fields are the XEP's.

Hooks iq set of <command/> to the host, disco#info and disco#items of the command nodes
(before disco's own handlers, which refuse nodes), and `session-closed` (its command
sessions end with it). Fires nothing; deleting accounts fires the core's `user-deleted`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from lxml import etree

from xmppd import accounts, forms
from xmppd.extension import PASS, Extension, hook, iq_handler
from xmppd.extensions.disco import NS_DISCO_INFO, NS_DISCO_ITEMS, info_element
from xmppd.forms import Field
from xmppd.protocol.errors import BadRequest, Conflict, Forbidden, ItemNotFound, NotAllowed, StanzaError
from xmppd.protocol.jid import JID
from xmppd.protocol.namespaces import NS_CLIENT, XML_LANG
from xmppd.protocol.stanza import make_element, sub_element

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_ADMIN = "http://jabber.org/protocol/admin"
ACTIONS = frozenset({"execute", "cancel", "prev", "next", "complete"})
MAX_SESSIONS_PER_REQUESTER = 16


def command_error(error: StanzaError, condition: str) -> StanzaError:
    """Add the XEP-0050 specific condition (bad-action, bad-sessionid...) to `error`."""
    error.app_condition = make_element(f"{{{NS_COMMANDS}}}{condition}")
    return error


# ------------------------------------------------------------------ the command model


@dataclass(frozen=True)
class Stage:
    """Show `form` and wait for the requester; `actions` are those allowed next."""

    form: etree._Element
    actions: tuple[str, ...] = ("complete",)
    default: str = "complete"


@dataclass(frozen=True)
class Completed:
    payload: tuple[etree._Element, ...] = ()  # e.g. a data form of type result
    notes: tuple[tuple[str, str], ...] = ()  # (info|warn|error, text)


@dataclass
class CommandSession:
    id: str
    node: str
    requester: JID
    last_active: float
    stage: Stage | None = None
    previous: list[Stage] = field(default_factory=list)  # for action 'prev'
    data: dict = field(default_factory=dict)  # what earlier stages gathered


Run = Callable[[CommandSession, "dict[str, list[str]] | None"], Awaitable["Stage | Completed"]]


@dataclass(frozen=True)
class Command:
    """`run(session, submitted)` is called with None first, then with each submitted form."""

    node: str
    name: str
    run: Run
    may_execute: Callable[[JID], bool]


# ------------------------------------------------------------------ XEP-0133 forms

ACCOUNT_JID = Field("accountjid", "jid-single", "The Jabber ID for the account", required=True)
ACCOUNT_JIDS = Field("accountjids", "jid-multi", "The Jabber ID(s) to delete", required=True)
PASSWORD = Field("password", "text-private", "The password for this account", required=True)
PASSWORD_VERIFY = Field("password-verify", "text-private", "Retype password")
MAX_ITEMS = Field(
    "max_items",
    "list-single",
    "Maximum number of items to show",
    ("100",),
    options=(
        ("25", "25"),
        ("50", "50"),
        ("75", "75"),
        ("100", "100"),
        ("150", "150"),
        ("200", "200"),
        ("none", "None"),
    ),
)
ANNOUNCEMENT = Field("announcement", "text-multi", "Announcement", required=True)


class AdHocCommands(Extension):
    xeps = {50: "1.3.0", 133: "1.3.1"}
    features = [NS_COMMANDS]
    depends = ["disco"]

    @dataclass(frozen=True)
    class Options:
        session_timeout: float = 600.0  # seconds a multi-stage command waits for the next stage
        announcement_type: str = "headline"  # message type of XEP-0133 announcements: headline | normal

        def validate(self, where):
            where.check("session_timeout", self.session_timeout > 0, "must be positive")
            where.one_of("announcement_type", self.announcement_type, ("headline", "normal"))

    def __init__(self, host, options):
        super().__init__(host, options)
        self.commands: dict[str, Command] = {}
        self.sessions: dict[tuple[JID, str], CommandSession] = {}

    async def start(self) -> None:
        for node, name, run in (
            (
                "add-user",
                "Add a User",
                self.form_command(
                    "Adding a User",
                    "Fill out this form to add a user.",
                    [ACCOUNT_JID, PASSWORD, PASSWORD_VERIFY],
                    self.add_user,
                ),
            ),
            (
                "delete-user",
                "Delete a User",
                self.form_command(
                    "Deleting a User", "Fill out this form to delete a user.", [ACCOUNT_JIDS], self.delete_users
                ),
            ),
            (
                "change-user-password",
                "Change User Password",
                self.form_command(
                    "Changing a User Password",
                    "Fill out this form to change a user's password.",
                    [ACCOUNT_JID, PASSWORD],
                    self.change_password,
                ),
            ),
            ("get-online-users-num", "Get Number of Online Users", self.online_users_number),
            (
                "get-online-users-list",
                "Get List of Online Users",
                self.form_command(
                    "Requesting List of Online Users",
                    "Fill out this form to request the online users of this service.",
                    [MAX_ITEMS],
                    self.online_users_list,
                ),
            ),
            (
                "announce",
                "Send Announcement to Online Users",
                self.form_command(
                    "Making an Announcement",
                    "Fill out this form to make an announcement to all online users of this service.",
                    [ANNOUNCEMENT],
                    self.announce,
                ),
            ),
        ):
            self.add(Command(f"{NS_ADMIN}#{node}", name, run, self.host.is_admin))

    def add(self, command: Command) -> None:
        self.commands[command.node] = command

    # ------------------------------------------------------------- discovery

    def _visible(self, requester: JID) -> list[Command]:
        return [c for c in self.commands.values() if c.may_execute(requester)]

    @iq_handler("get", NS_DISCO_ITEMS, "query", to=("host",))
    async def command_list(self, iq):
        node = iq.element[0].get("node")
        if node != NS_COMMANDS:
            return PASS
        query = make_element(f"{{{NS_DISCO_ITEMS}}}query", {"node": NS_COMMANDS})
        for command in self._visible(iq.from_):
            sub_element(
                query,
                f"{{{NS_DISCO_ITEMS}}}item",
                {"jid": self.host.domain, "node": command.node, "name": command.name},
            )
        return query

    @iq_handler("get", NS_DISCO_INFO, "query", to=("host",))
    async def command_info(self, iq):
        node = iq.element[0].get("node")
        if node == NS_COMMANDS:
            return info_element([("automation", "command-list", "Ad-Hoc Commands")], [NS_DISCO_ITEMS], node=node)
        command = self.commands.get(node)
        if command is None:
            return PASS
        if not command.may_execute(iq.from_):
            raise Forbidden()
        return info_element([("automation", "command-node", command.name)], [NS_COMMANDS, forms.NS_DATA], node=node)

    # ------------------------------------------------------------- execution

    @iq_handler("set", NS_COMMANDS, "command", to=("host",))
    async def execute(self, iq):
        request = iq.element[0]
        command = self.commands.get(request.get("node") or "")
        if command is None:
            raise ItemNotFound()
        if not command.may_execute(iq.from_):
            raise Forbidden()
        action = request.get("action", "execute")
        if action not in ACTIONS:
            raise command_error(BadRequest(), "malformed-action")
        session_id = request.get("sessionid")
        if session_id is None:
            if action in ("cancel", "prev"):
                raise command_error(BadRequest(text="no command session to go on with"), "bad-sessionid")
            session = self._new_session(command, iq.from_)
            submitted = None
        else:
            session = self._session(command, iq.from_, session_id)
            if action == "cancel":
                del self.sessions[(iq.from_, session.id)]
                return self._command_element(session, "canceled")
            if action == "execute":
                action = session.stage.default
            if action not in session.stage.actions or (action == "prev" and not session.previous):
                raise command_error(BadRequest(), "bad-action")
            if action == "prev":
                session.stage = session.previous.pop()
                return self._command_element(session, "executing")
            form = forms.find(request)
            submitted = forms.parse(form, types=("submit", "cancel")) if form is not None else {}
        try:
            outcome = await command.run(session, submitted)
        except StanzaError as error:
            self.sessions.pop((iq.from_, session.id), None)
            if isinstance(error, BadRequest) and error.app_condition is None:
                command_error(error, "bad-payload")
            raise
        if isinstance(outcome, Completed):
            self.sessions.pop((iq.from_, session.id), None)
            return self._command_element(session, "completed", outcome)
        if session.stage is not None:
            session.previous.append(session.stage)
        session.stage = outcome
        return self._command_element(session, "executing")

    def _new_session(self, command: Command, requester: JID) -> CommandSession:
        mine = sorted((s for (owner, _), s in self.sessions.items() if owner == requester), key=lambda s: s.last_active)
        for oldest in mine[: max(0, len(mine) - MAX_SESSIONS_PER_REQUESTER + 1)]:
            del self.sessions[(requester, oldest.id)]
        session = CommandSession(secrets.token_urlsafe(12), command.node, requester, time.monotonic())
        self.sessions[(requester, session.id)] = session
        return session

    def _session(self, command: Command, requester: JID, session_id: str) -> CommandSession:
        session = self.sessions.get((requester, session_id))
        if session is None or session.node != command.node:
            raise command_error(BadRequest(text="unknown command session"), "bad-sessionid")
        now = time.monotonic()
        if now - session.last_active > self.options.session_timeout:
            del self.sessions[(requester, session_id)]
            raise command_error(NotAllowed(text="the command session timed out"), "session-expired")
        session.last_active = now
        return session

    def _command_element(self, session: CommandSession, status: str, outcome: Completed | None = None):
        element = make_element(
            f"{{{NS_COMMANDS}}}command",
            {"node": session.node, "sessionid": session.id, "status": status, XML_LANG: "en"},
        )
        if status == "executing":
            stage = session.stage
            actions = sub_element(element, f"{{{NS_COMMANDS}}}actions", {"execute": stage.default})
            for action in ("prev", "next", "complete"):
                if action in stage.actions:
                    sub_element(actions, f"{{{NS_COMMANDS}}}{action}")
            element.append(stage.form)
        elif outcome is not None:
            for kind, text in outcome.notes:
                sub_element(element, f"{{{NS_COMMANDS}}}note", {"type": kind}, text)
            for payload in outcome.payload:
                element.append(payload)
        return element

    @hook("session-closed")
    async def drop_command_sessions(self, session) -> None:
        for key in [key for key in self.sessions if key[0] == session.jid]:
            del self.sessions[key]

    # ------------------------------------------------------------- XEP-0133

    def form_command(self, title: str, instructions: str, fields: list[Field], complete) -> Run:
        """A command of one form (FORM_TYPE http://jabber.org/protocol/admin), then `complete`."""

        async def run(session: CommandSession, submitted):
            if submitted is None:
                # A fresh element per stage: the reply takes the element it is given.
                return Stage(
                    forms.build("form", title=title, instructions=instructions, form_type=NS_ADMIN, fields=fields)
                )
            forms.check(submitted, fields)
            return await complete(submitted)

        return run

    def _account(self, value: str, var: str) -> JID:
        jid = forms.parse_jid(value, var)
        if jid.local is None or jid.resource is not None or jid.domain != self.host.domain:
            raise BadRequest(text=f"{var}: {value} is not an account of {self.host.domain}")
        return jid

    @staticmethod
    def _result(*fields: Field) -> Completed:
        return Completed(payload=(forms.build("result", form_type=NS_ADMIN, fields=fields),))

    async def add_user(self, submitted) -> Completed:
        jid = self._account(forms.single(submitted, "accountjid"), "accountjid")
        password = submitted["password"][0]
        verify = submitted.get("password-verify")
        if verify and verify[0] != password:
            raise BadRequest(text="the passwords differ")
        if not await accounts.create_user(self.host, jid.local, password):
            raise Conflict(text=f"{jid} exists already")
        self.log.info("event=user-added jid=%s", jid)
        return Completed(notes=(("info", f"{jid} was added."),))

    async def delete_users(self, submitted) -> Completed:
        jids = [self._account(value, "accountjids") for value in submitted["accountjids"] if value.strip()]
        missing = [str(jid) for jid in jids if not await self.host.user_exists(jid.local)]
        if missing:
            raise ItemNotFound(text=f"no such account: {', '.join(missing)}")
        for jid in jids:
            await accounts.delete_user(self.host, jid.local)
            self.log.info("event=user-deleted jid=%s", jid)
        return Completed(notes=(("info", f"Deleted {', '.join(map(str, jids))}."),))

    async def change_password(self, submitted) -> Completed:
        jid = self._account(forms.single(submitted, "accountjid"), "accountjid")
        if not await accounts.set_password(self.host, jid.local, submitted["password"][0]):
            raise ItemNotFound(text=f"no such account: {jid}")
        self.log.info("event=password-changed jid=%s", jid)
        return Completed(notes=(("info", f"The password of {jid} was changed."),))

    async def online_users_number(self, session, submitted) -> Completed:
        return self._result(
            Field("onlineusersnum", None, "The number of online users", (str(len(self.host.online_users())),))
        )

    async def online_users_list(self, submitted) -> Completed:
        limit = forms.single(submitted, "max_items", "none")
        users = sorted(f"{local}@{self.host.domain}" for local in self.host.online_users())
        if limit != "none":
            users = users[: int(limit)]
        return self._result(Field("onlineuserjids", "jid-multi", "The list of all online users", tuple(users)))

    async def announce(self, submitted) -> Completed:
        text = forms.text(submitted, "announcement")
        recipients = [s.jid for local in self.host.online_users() for s in self.host.sessions_of(local)]
        for jid in recipients:
            message = make_element(
                f"{{{NS_CLIENT}}}message",
                {"from": self.host.domain, "to": str(jid), "type": self.options.announcement_type},
            )
            sub_element(message, f"{{{NS_CLIENT}}}body", text=text)
            await self.host.send(message)
        self.log.info("event=announcement-sent sessions=%d", len(recipients))
        return Completed(notes=(("info", f"Sent to {len(recipients)} sessions."),))
