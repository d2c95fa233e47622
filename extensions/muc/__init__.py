"""XEP-0045 Multi-User Chat, on a component domain of each user host (conference.<domain>).

This extension, loaded on a user host, creates the component host and loads the
service's parts on it; each part is a small extension of this package hooking the
routing events of the component and the service's own events, like Prosody's
plugins/muc/*.lib.lua:

    service.py      rooms, persistence, routing of iqs, service disco items   (XEP-0045)
    occupants.py    entering, creating, presence, nickname changes, leaving
    groupchat.py    room messages, subject                                     (XEP-0421 ids)
    private.py      private messages, iqs to occupants, self-ping             (XEP-0410)
    history.py      discussion history on entering
    archive.py      the room's archive                                        (XEP-0313, XEP-0359)
    config.py       owner configuration (XEP-0004 forms), instant rooms, destruction
    affiliations.py affiliations and roles: members, bans, kicks, voice
    invites.py      mediated invitations and declines (direct ones, XEP-0249, are plain messages)
    roominfo.py     disco#info of rooms (XEP-0030, XEP-0128 muc#roominfo)
    avatar.py       room avatars (vcard-temp on the room JID, XEP-0486)

Events of the service (fired on the component's bus): muc-room-created,
muc-room-destroyed, muc-occupant-pre-join (vetoable: raise a StanzaError),
muc-occupant-joined, muc-occupant-left, muc-message (before fan-out),
muc-config-changed, muc-disco-info.

A user whose session ends leaves its rooms through the unavailable presence its server
sends to everyone it sent directed presence to (RFC 6121 4.6, extensions/presence.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from xmppd.extension import Extension

PARTS = (
    "muc.service",
    "muc.occupants",
    "muc.groupchat",
    "muc.private",
    "muc.history",
    "muc.archive",
    "muc.config",
    "muc.affiliations",
    "muc.invites",
    "muc.roominfo",
    "muc.avatar",
)


class Muc(Extension):
    depends = ["disco", "presence"]

    @dataclass(frozen=True)
    class Options:
        domain: str = "conference.{host}"  # {host} is the user host's domain
        name: str = "Chatrooms"  # the service's disco identity name
        room_creation: str = "local"  # who creates rooms: anyone | local (users of the host) | admins
        max_rooms: int = 0  # 0: no limit
        max_occupants: int = 500  # the most occupants a room may have (0: no limit)
        default_public: bool = True
        default_persistent: bool = False
        default_archiving: bool = True
        default_history_length: int = 20  # messages sent to a user entering a room
        max_history_length: int = 100  # the most an owner may configure
        archive_page_size: int = 50  # MAM results per page when the client asks for none
        max_archive_page_size: int = 250
        max_pending_archive_writes: int = 10000  # room archive writes under way before messages wait
        max_password_failures: int = 5  # wrong room passwords per user and window (0: no limit)
        password_failure_window: float = 300.0  # seconds

        def validate(self, where):
            where.one_of("room_creation", self.room_creation, ("anyone", "local", "admins"))
            where.component_domain("domain", self.domain)
            for key in ("max_rooms", "max_occupants", "default_history_length", "max_history_length"):
                where.check(key, getattr(self, key) >= 0, "must not be negative")
            where.check(
                "default_history_length",
                self.default_history_length <= self.max_history_length,
                "must not exceed max_history_length",
            )
            where.check(
                "archive_page_size",
                0 < self.archive_page_size <= self.max_archive_page_size,
                "must be positive and at most max_archive_page_size",
            )
            where.check("max_password_failures", self.max_password_failures >= 0, "must not be negative")
            where.check("max_pending_archive_writes", self.max_pending_archive_writes > 0, "must be positive")
            where.check("password_failure_window", self.password_failure_window > 0, "must be positive")

    async def start(self) -> None:
        self.component = self.services.directory.add_component(
            self.options.domain.format(host=self.host.domain), parent=self.host
        )
        await self.component.load("disco")
        await self.component.load("ping")
        for part in PARTS:
            await self.component.load(part)
