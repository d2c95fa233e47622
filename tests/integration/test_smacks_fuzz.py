"""XEP-0198 under random connects, cuts, resumptions and fresh logins (issue 20): a
hypothesis-driven client against a real xmppd, with a small window so that pacing,
backlogs and offline storage all take part. Invariant: every message arrives, and a
message arrives again only if the client never acknowledged it (a fresh login after a
cut may repeat what was unacknowledged; a resumption repeats nothing)."""

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import AccountPool
from tests.support.raw import RawClient
from tests.support.server import XmppdProcess
from tests.support.smacks import NS_SM, StanzaStream, authenticated, coming_online, drop, enable

ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(1, 40)),
        st.sampled_from([("sync",), ("read",), ("drop",), ("resume",), ("login",)]),
    ),
    min_size=1,
    max_size=16,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = XmppdProcess(
        tmp_path_factory.mktemp("smacks-fuzz"),
        "[extensions.smacks]\nwindow = 8\n[extensions.offline]\nmax_messages_per_stranger = 10000\n",
        c2s_section="auth_failure_delay = 0",
    ).start()
    process.accounts = AccountPool(process)
    yield process
    process.stop()


class Phone:
    """The recipient: a XEP-0198 client that reads, acks what it read when asked, is cut
    and comes back by resumption or by a fresh login. `history`: each arrival, with
    whether the server surely learnt that the client had it."""

    def __init__(self, server, user: str):
        self.server, self.user = server, user
        self.reader: StanzaStream | None = None
        self.sm_id = None
        self.history: list[tuple[str, bool]] = []
        self.connected = False

    async def login(self) -> None:
        if self.reader is not None:
            self._close_epoch()
        self.reader, self.sm_id = await coming_online(self.server, self.user, "phone", chunk=4096)
        self.connected = True

    async def resume(self) -> None:
        client, _ = await authenticated(self.server, self.user)
        await client.send(f"<resume xmlns='{NS_SM}' previd='{self.sm_id}' h='{self.reader.handled}'/>")
        await client.expect(r"<resumed [^>]*/>")
        self.reader = StanzaStream(client, chunk=4096, resumed=self.reader)
        self.connected = True

    def drop(self) -> None:
        drop(self.reader.client)
        self.connected = False

    def _close_epoch(self) -> None:
        self.history += [(message_id, h <= self.reader.confirmed) for message_id, h in self.reader.arrivals]

    def finish(self) -> list[tuple[str, bool]]:
        self._close_epoch()
        return self.history


async def scenario(server, actions) -> None:
    sender_user, user = server.accounts.local(), server.accounts.local()
    bob = f"{user}@{server.domain}"
    sender = RawClient(server.domain)
    await sender.login(server.port, sender_user, "secret")
    await enable(sender, resume=False)
    outbox = StanzaStream(sender)
    phone = Phone(server, user)
    await phone.login()
    sent, hibernations = [], 0
    for action in actions:
        name = action[0]
        if name == "send":
            ids = [f"m{len(sent) + n}" for n in range(action[1])]
            sent += ids
            await sender.send(
                "".join(f"<message to='{bob}' type='chat' id='{i}'><body>{i}</body></message>" for i in ids)
            )
        elif name == "sync" and phone.connected:
            await phone.reader.ping(f"sync{len(sent)}", timeout=30)
        elif name == "read" and phone.connected:  # whatever came, if anything did
            try:
                await asyncio.wait_for(phone.reader.read(), 0.2)
            except TimeoutError:
                pass
        elif name == "drop" and phone.connected:
            phone.drop()
            hibernations += 1
            await server.wait_for_log(f"event=hibernating jid={bob}/phone", count=hibernations, timeout=10)
        elif name == "resume" and not phone.connected:
            await phone.resume()
        elif name == "login" and not phone.connected:
            await phone.login()
    if not phone.connected:
        await phone.resume()
    await outbox.ping("sender-done", timeout=60)
    assert not outbox.errors, f"messages bounced: {outbox.errors}"
    earlier = {message_id for message_id, _ in phone.history}
    await phone.reader.until(lambda: set(sent) <= earlier | set(phone.reader.message_ids), timeout=60)
    await phone.reader.ping("done", timeout=30)
    history = phone.finish()

    assert set(sent) <= {message_id for message_id, _ in history}, "a message was lost"
    known = set()  # acknowledged, surely: never again
    for message_id, acknowledged in history:
        assert message_id not in known, f"{message_id} came again after the server knew the client had it"
        if acknowledged:
            known.add(message_id)
    await phone.reader.client.close()
    await sender.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_cuts_resumptions_and_logins_lose_nothing_and_repeat_only_the_unacknowledged(server, actions):
    asyncio.run(scenario(server, actions))
