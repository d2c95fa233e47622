"""Flow control end to end (issue 12): a slow or backlogged phone gets every message, in
order, once, at the speed it reads, with bounded server memory; the XEP-0198 window
paces it instead of ending its session. Raw-socket clients; every loop bounded in count
and time."""

import asyncio
import re
import socket
from pathlib import Path

import pytest

from tests.conftest import unique
from tests.support.accounts import create_accounts
from tests.support.raw import RawClient
from tests.support.smacks import (
    NS_SM,
    StanzaStream,
    attribute,
    authenticated,
    coming_online,
    drop,
    enable,
    managed_login,
    send_message,
)

CONFIG = """
[extensions.offline]
max_messages_per_user = 10000
max_messages_per_stranger = 10000
"""
MEMORY_LIMIT = 2 * 1024**3  # address space of a server under a memory attack (~700 MB idle)


async def sender_of(server, jid: str) -> RawClient:
    client = RawClient(server.domain)
    await client.login(server.port, jid.split("@")[0], "secret")
    await enable(client, resume=False)
    return client


async def send_all(sender: RawClient, to: str, count: int, prefix: str, batch: int = 250) -> None:
    """Send `count` chat messages as fast as the server takes them; return once the
    server acknowledged them all (each one delivered or stored)."""
    for start in range(0, count, batch):
        await sender.send(
            "".join(
                f"<message to='{to}' type='chat' id='{prefix}{n}'><body>{prefix} {n}</body></message>"
                for n in range(start, min(start + batch, count))
            )
        )
    await sender.send(f"<r xmlns='{NS_SM}'/>")
    while True:
        ack = await sender.expect(r"<a ([^>]*)/>", timeout=120)
        if attribute(ack.group(1), "h") == str(count):
            return
        await sender.send(f"<r xmlns='{NS_SM}'/>")


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


def assert_all_once(ids: list[str], prefix: str, count: int) -> None:
    expected = [f"{prefix}{n}" for n in range(count)]
    mine = [i for i in ids if i.startswith(prefix)]
    assert len(mine) == len(set(mine)), "a message arrived twice"
    assert set(mine) == set(expected), f"{len(set(expected) - set(mine))} messages never arrived"
    assert mine == expected, "the messages arrived out of order"


async def test_a_slow_reader_gets_every_message_in_order_with_bounded_server_memory(make_xmppd):
    server = make_xmppd(CONFIG, memory_limit=MEMORY_LIMIT).start()
    alice, bob = create_accounts(server, [unique("fast"), unique("slow")])
    phone, _ = await managed_login(server, bob.split("@")[0], "phone")
    reader = StanzaStream(phone, handled=1, chunk=4096, pace=0.002)
    before = rss_kib(server.process.pid)
    peak = before

    async def watch_memory():
        nonlocal peak
        while True:
            peak = max(peak, rss_kib(server.process.pid))
            await asyncio.sleep(0.1)  # a sampling period, not a synchronisation

    watcher = asyncio.ensure_future(watch_memory())
    sender = await sender_of(server, alice)
    count = 5000
    sending = asyncio.ensure_future(send_all(sender, bob, count, "m"))
    await reader.until(lambda: len(reader.message_ids) >= count, timeout=240)
    await asyncio.wait_for(sending, 60)
    watcher.cancel()
    await reader.ping("done")  # nothing more comes: no copies
    assert_all_once(reader.message_ids, "m", count)
    assert "ack-queue-full" not in server.log and "event=stalled" not in server.log
    # 5,000 messages of ~150 bytes are ~1 MB of XML: the backlog is in storage, not memory.
    assert peak - before < 48 * 1024, f"server RSS grew by {(peak - before) // 1024} MiB"
    await phone.close()
    await sender.close()


async def test_a_reader_slower_than_the_ack_timeout_is_not_taken_for_dead(make_xmppd):
    """The <r/> after a full window of large messages reaches a slow reader long after
    ack_timeout: as long as the output keeps going out, the connection is not dropped."""
    server = make_xmppd(CONFIG + "[extensions.smacks]\nack_timeout = 1\n").start()
    alice, bob = create_accounts(server, [unique("fast"), unique("slow")])
    phone, _ = await managed_login(server, bob.split("@")[0], "phone")
    reader = StanzaStream(phone, handled=1, chunk=16384, pace=0.05)  # about 300 KB/s
    sender = await sender_of(server, alice)
    count, padding = 400, "x" * 4000  # 1.6 MB: about 5 s to read
    await sender.send(
        "".join(f"<message to='{bob}' type='chat' id='p{n}'><body>{padding}</body></message>" for n in range(count))
    )
    await reader.until(lambda: len(reader.message_ids) >= count, timeout=120)
    await reader.ping("done")
    assert_all_once(reader.message_ids, "p", count)
    assert "event=ack-timeout" not in server.log and "event=hibernating" not in server.log
    await phone.close()
    await sender.close()


async def test_five_thousand_offline_messages_drain_to_a_slow_acker_in_one_login(make_xmppd):
    server = make_xmppd(CONFIG).start()
    alice, bob = create_accounts(server, [unique("fast"), unique("away")])
    sender = await sender_of(server, alice)
    count = 5000
    await send_all(sender, bob, count, "o")
    reader, _ = await coming_online(server, bob.split("@")[0], "phone", chunk=8192, pace=0.001)
    phone = reader.client
    await reader.until(lambda: len(reader.message_ids) >= count, timeout=240)
    await reader.ping("done")
    assert_all_once(reader.message_ids, "o", count)
    assert server.log.count(f"event=session-started jid={bob}") == 1
    await phone.close()
    await sender.close()


async def test_sigkill_after_the_last_ack_loses_none_of_500_and_all_are_archived(make_xmppd):
    server = make_xmppd(CONFIG).start()
    alice, bob = create_accounts(server, [unique("fast"), unique("never")])
    sender = await sender_of(server, alice)
    count = 500
    await send_all(sender, bob, count, "k")
    server.kill()  # right after the last ack
    await sender.close()
    server.start()

    reader, _ = await coming_online(server, bob.split("@")[0], "phone")
    phone = reader.client
    await reader.until(lambda: len(reader.message_ids) >= count, timeout=120)
    await reader.ping("done")
    assert_all_once(reader.message_ids, "k", count)

    after = ""
    for page in range(20):  # 500 messages, paged
        fin = (
            await reader.request(
                f"<iq type='set' id='mam{page}'><query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>"
                f"<max>100</max>{after}</set></query></iq>",
                f"mam{page}",
                timeout=60,
            )
        ).find("{urn:xmpp:mam:2}fin")
        if fin.get("complete") == "true":
            break
        after = (
            f"<after>{fin.findtext('{http://jabber.org/protocol/rsm}set/{http://jabber.org/protocol/rsm}last')}</after>"
        )
    assert sorted(reader.archived_ids) == sorted(f"k{n}" for n in range(count))
    await phone.close()


async def test_repeated_cuts_during_a_drain_with_resumption_lose_and_repeat_nothing(make_xmppd):
    server = make_xmppd(CONFIG).start()
    alice, bob = create_accounts(server, [unique("fast"), unique("cut")])
    sender = await sender_of(server, alice)
    count = 2000
    await send_all(sender, bob, count, "c")
    user = bob.split("@")[0]
    reader, sm_id = await coming_online(server, user, "phone", chunk=4096)
    phone = reader.client
    cuts = 0
    while len(reader.message_ids) < count:
        target = min(count, len(reader.message_ids) + 300)
        await reader.until(lambda: len(reader.message_ids) >= target, timeout=60)
        if len(reader.message_ids) >= count:
            break
        drop(phone)  # a cut, mid-stream: no close, no ack
        cuts += 1
        await server.wait_for_log(f"event=hibernating jid={bob}/phone", timeout=10, count=cuts)
        phone, _ = await authenticated(server, user)
        await phone.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='{reader.handled}'/>")
        await phone.expect(r"<resumed [^>]*/>")
        reader = StanzaStream(phone, chunk=4096, resumed=reader)
    assert cuts >= 5
    await reader.ping("done")
    assert_all_once(reader.message_ids, "c", count)
    await phone.close()
    await sender.close()


# ------------------------------------------------------------------ what one account can do


async def test_sessions_ending_one_after_another_hand_a_message_on_once(make_xmppd):
    """Issue 20 item 1: a message unacknowledged by several resumable sessions that expire
    one after the other used to be handed from one to the next, doubling each time
    (2^(N-2) copies). Now each copy goes to offline storage once, and copies of one
    message once in all."""
    server = make_xmppd(CONFIG, memory_limit=MEMORY_LIMIT).start()
    alice, bob = create_accounts(server, [unique("fast"), unique("many")])
    user = bob.split("@")[0]
    resources = [f"r{n}" for n in range(8)]
    sessions = [(await managed_login(server, user, resource, max_=1))[0] for resource in resources]
    sender = await sender_of(server, alice)
    await sender.send(f"<message to='{bob}' type='chat' id='once'><body>once</body></message>")
    for client in sessions:
        await client.expect("<body>once</body>")  # every resource has it, unacknowledged
    for client in sessions:
        drop(client)
    await server.wait_for_log(f"event=hibernation-expired jid={bob}/", timeout=30, count=len(sessions))

    reader, _ = await coming_online(server, user, "fresh")
    fresh = reader.client
    await reader.until(lambda: "once" in reader.message_ids, timeout=30)
    await reader.ping("done")
    assert reader.message_ids.count("once") == 1
    await fresh.close()
    await sender.close()


@pytest.mark.parametrize("managed", [False, True], ids=["plain", "stream-management"])
async def test_a_client_that_never_reads_holds_bounded_memory_then_is_let_go(make_xmppd, managed):
    """Issue 20 item 3: what is written to a client that reads nothing is bounded: messages
    worth keeping wait in its backlog, the rest in memory up to c2s.max_held_bytes. A
    plain client is closed after c2s.stall_timeout; a XEP-0198 one, which never acks,
    is dropped after ack_timeout and its session ends after resume_timeout. Either way
    its messages then go to offline storage: all of them with XEP-0198, all but what
    was written before its output backed up without."""
    # With XEP-0198 the ack timeout is what lets the client go: the stall timeout is
    # then set beyond it, or a loaded machine's slow 40 MB lets the stall come first.
    stall_timeout = 120 if managed else 10
    server = make_xmppd(
        CONFIG + "[extensions.smacks]\nack_timeout = 3\nresume_timeout = 3\n",
        c2s_section=f"stall_timeout = {stall_timeout}",
        memory_limit=MEMORY_LIMIT,
    ).start()
    alice, bob = create_accounts(server, [unique("fast"), unique("deaf")])
    user = bob.split("@")[0]
    if managed:
        deaf, _ = await managed_login(server, user, "deaf")
    else:
        deaf = RawClient(server.domain)
        await deaf.login(server.port, user, "secret", resource="deaf")
        await deaf.send("<presence/>")
        await deaf.expect(r"<presence[^>]*(/>|>.*?</presence>)")
    deaf.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    deaf.writer.transport.pause_reading()  # from now on it reads nothing
    before = rss_kib(server.process.pid)

    sender = await sender_of(server, alice)
    padding = "x" * 100_000
    for n in range(400):  # 40 MB the client does not take
        await sender.send(
            f"<message to='{bob}' type='headline' id='h{n}'><body>{padding}</body></message>"
            f"<message to='{bob}' type='chat' id='d{n}'><body>kept {n}</body></message>"
        )
    await sender.send(f"<r xmlns='{NS_SM}'/>")
    while attribute((await sender.expect(r"<a ([^>]*)/>", timeout=60)).group(1), "h") != "800":
        await sender.send(f"<r xmlns='{NS_SM}'/>")
    grown = rss_kib(server.process.pid) - before
    assert grown < 24 * 1024, f"server RSS grew by {grown // 1024} MiB for 40 MB the client never read"
    assert await server.limit_reached("c2s.max_held_bytes") > 0

    await server.wait_for_log("event=ack-timeout" if managed else "event=stalled", timeout=60)
    await server.wait_for_log(
        f"event=session-ended jid={bob}/deaf" if not managed else f"event=hibernation-expired jid={bob}/deaf",
        timeout=30,
    )
    deaf.writer.transport.abort()
    reader, _ = await coming_online(server, user, "again")
    again = reader.client
    await reader.until(lambda: "d399" in reader.message_ids, timeout=60)
    await reader.ping("done")
    if managed:
        assert_all_once(reader.message_ids, "d", 400)
    else:
        kept = [i for i in reader.message_ids if i.startswith("d")]
        assert len(kept) == len(set(kept)) and {f"d{n}" for n in range(100, 400)} <= set(kept)
    await again.close()
    await sender.close()


async def test_a_backlog_is_bounded_and_the_sender_told(make_xmppd):
    server = make_xmppd(
        CONFIG + "[extensions.backlog]\nmax_messages_per_resource = 20\n[extensions.smacks]\nwindow = 5\n"
    ).start()
    alice, bob = create_accounts(server, [unique("fast"), unique("slow")])
    phone, _ = await managed_login(server, bob.split("@")[0], "phone")  # never acks
    sender = await sender_of(server, alice)
    errors = StanzaStream(sender)  # acks: the sender's window is small too
    await sender.send(
        "".join(f"<message to='{bob}' type='chat' id='b{n}'><body>b {n}</body></message>" for n in range(40))
    )
    await errors.until(lambda: len(errors.errors) >= 16, timeout=30)
    await errors.ping("done")
    # Four went out (the window holds the presence echo too), twenty wait, the rest are refused.
    assert errors.errors == {f"b{n}": "resource-constraint" for n in range(24, 40)}
    assert await server.limit_reached("extensions.backlog.max_messages_per_resource") == 16
    assert await server.metric('xmppd_sessions_held_back{host="localhost"}') == 1  # the phone
    await phone.close()
    await sender.close()


async def test_what_a_resumption_acknowledges_leaves_room_in_the_backlog(make_xmppd):
    """Kept messages that <resume h=../> acknowledges are deleted from the backlog and no
    longer count against its limit: resumptions do not fill it up."""
    server = make_xmppd(CONFIG + "[extensions.backlog]\nmax_messages_per_resource = 5\n").start()
    alice, bob = create_accounts(server, [unique("fast"), unique("phone")])
    user = bob.split("@")[0]
    desktop = RawClient(server.domain)  # connected: the phone's messages go to its backlog
    await desktop.login(server.port, user, "secret", resource="desktop")
    await desktop.send("<presence/>")
    phone, sm_id = await managed_login(server, user, "phone")
    sender = await sender_of(server, alice)
    outbox = StanzaStream(sender)
    reader = StanzaStream(phone, handled=1)

    async def cut_and_resume(cuts: int) -> StanzaStream:
        drop(reader.client)  # what it did not ack is kept
        await server.wait_for_log(f"event=unacked-kept jid={bob}/phone ", count=cuts)
        client, _ = await authenticated(server, user)
        await client.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='{reader.handled}'/>")
        await client.expect(r"<resumed [^>]*/>")  # acknowledges all it had
        return StanzaStream(client, resumed=reader)

    for round_ in range(3):  # kept, then acknowledged: more than the limit
        for n in range(3):
            await send_message(sender, bob, f"r{round_} {n}", f"r{round_}-{n}")
        await reader.until(lambda: sum(i.startswith(f"r{round_}-") for i in reader.message_ids) >= 3, timeout=30)
        reader = await cut_and_resume(round_ + 1)
    drop(reader.client)  # asleep again: what comes waits in the backlog
    await server.wait_for_log(f"event=unacked-kept jid={bob}/phone ", count=4)
    await send_message(sender, bob, "after", "after")
    await outbox.ping("done")
    assert not outbox.errors, f"refused: {outbox.errors}"
    client, _ = await authenticated(server, user)
    await client.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='{reader.handled}'/>")
    await client.expect(r"<body>after</body>")
    await client.close()
    await desktop.close()
    await sender.close()


async def test_one_stranger_cannot_fill_an_offline_queue(make_xmppd):
    server = make_xmppd("[extensions.offline]\nmax_messages_per_stranger = 10\n").start()
    stranger, friend, bob = create_accounts(server, [unique("stranger"), unique("friend"), unique("away")])
    owner = RawClient(server.domain)  # bob has friend in his roster
    await owner.login(server.port, bob.split("@")[0], "secret", resource="setup")
    await owner.send(f"<iq type='set' id='add'><query xmlns='jabber:iq:roster'><item jid='{friend}'/></query></iq>")
    await owner.expect(r"<iq[^>]*id=.add.")
    await owner.close()
    flooder = await sender_of(server, stranger)
    errors = StanzaStream(flooder)
    await flooder.send(
        "".join(f"<message to='{bob}' type='chat' id='s{n}'><body>s {n}</body></message>" for n in range(15))
    )
    await errors.until(lambda: len(errors.errors) >= 5, timeout=30)
    assert errors.errors == {f"s{n}": "service-unavailable" for n in range(10, 15)}
    friendly = await sender_of(server, friend)
    await send_all(friendly, bob, 15, "f")  # a contact may send more than a stranger
    assert await server.limit_reached("extensions.offline.max_messages_per_stranger") == 5
    reader, _ = await coming_online(server, bob.split("@")[0], "phone")
    phone = reader.client
    await reader.until(lambda: len(reader.message_ids) >= 25, timeout=30)
    assert_all_once(reader.message_ids, "f", 15)
    assert_all_once(reader.message_ids, "s", 10)
    await phone.close()
    await flooder.close()
    await friendly.close()
