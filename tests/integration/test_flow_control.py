"""Flow control end to end (issue 12): a slow or backlogged phone gets every message, in
order, once, at the speed it reads, with bounded server memory; the XEP-0198 window
paces it instead of ending its session. Raw-socket clients; every loop bounded in count
and time."""
import asyncio
import re
from pathlib import Path

from tests.conftest import unique
from tests.support.accounts import create_accounts
from tests.support.raw import RawClient
from tests.support.smacks import NS_SM, StanzaStream, attribute, authenticated, drop, enable, managed_login

CONFIG = """
[extensions.offline]
max_messages_per_user = 10000
"""


async def sender_of(server, jid: str) -> RawClient:
    client = RawClient(server.domain)
    await client.login(server.port, jid.split("@")[0], "secret")
    await enable(client, resume=False)
    return client


async def send_all(sender: RawClient, to: str, count: int, prefix: str, batch: int = 250) -> None:
    """Send `count` chat messages as fast as the server takes them; return once the
    server acknowledged them all (each one delivered or stored)."""
    for start in range(0, count, batch):
        await sender.send("".join(f"<message to='{to}' type='chat' id='{prefix}{n}'><body>{prefix} {n}</body></message>"
                                  for n in range(start, min(start + batch, count))))
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
    server = make_xmppd(CONFIG).start()
    alice, bob = create_accounts(server, [unique("fast"), unique("slow")])
    phone, _ = await managed_login(server, bob.split("@")[0], "phone")
    reader = StanzaStream(phone, handled=1, chunk=4096, pace=0.002)
    before = rss_kib(server.process.pid)
    peak = before

    async def watch_memory():
        nonlocal peak
        while True:
            peak = max(peak, rss_kib(server.process.pid))
            await asyncio.sleep(0.1)                       # a sampling period, not a synchronisation

    watcher = asyncio.ensure_future(watch_memory())
    sender = await sender_of(server, alice)
    count = 5000
    sending = asyncio.ensure_future(send_all(sender, bob, count, "m"))
    await reader.until(lambda: len(reader.message_ids) >= count, timeout=240)
    await asyncio.wait_for(sending, 60)
    watcher.cancel()
    await reader.ping("done")                              # nothing more comes: no copies
    assert_all_once(reader.message_ids, "m", count)
    assert "ack-queue-full" not in server.log and "event=stalled" not in server.log
    # 5,000 messages of ~150 bytes are ~1 MB of XML: the backlog is in storage, not memory.
    assert peak - before < 48 * 1024, f"server RSS grew by {(peak - before) // 1024} MiB"
    await phone.close()
    await sender.close()


async def test_five_thousand_offline_messages_drain_to_a_slow_acker_in_one_login(make_xmppd):
    server = make_xmppd(CONFIG).start()
    alice, bob = create_accounts(server, [unique("fast"), unique("away")])
    sender = await sender_of(server, alice)
    count = 5000
    await send_all(sender, bob, count, "o")
    phone, _ = await managed_login(server, bob.split("@")[0], "phone", presence=False)
    await phone.send("<presence/>")
    reader = StanzaStream(phone, chunk=8192, pace=0.001)
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
    server.kill()                                          # right after the last ack
    await sender.close()
    server.start()

    phone, _ = await managed_login(server, bob.split("@")[0], "phone", presence=False)
    await phone.send("<presence/>")
    reader = StanzaStream(phone)
    await reader.until(lambda: len(reader.message_ids) >= count, timeout=120)
    await reader.ping("done")
    assert_all_once(reader.message_ids, "k", count)

    after = ""
    for page in range(20):                                 # 500 messages, paged
        fin = (await reader.request(
            f"<iq type='set' id='mam{page}'><query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>"
            f"<max>100</max>{after}</set></query></iq>", f"mam{page}", timeout=60)).find("{urn:xmpp:mam:2}fin")
        if fin.get("complete") == "true":
            break
        after = f"<after>{fin.findtext('{http://jabber.org/protocol/rsm}set/{http://jabber.org/protocol/rsm}last')}</after>"
    assert sorted(reader.archived_ids) == sorted(f"k{n}" for n in range(count))
    await phone.close()


async def test_repeated_cuts_during_a_drain_with_resumption_lose_and_repeat_nothing(make_xmppd):
    server = make_xmppd(CONFIG).start()
    alice, bob = create_accounts(server, [unique("fast"), unique("cut")])
    sender = await sender_of(server, alice)
    count = 2000
    await send_all(sender, bob, count, "c")
    user = bob.split("@")[0]
    phone, sm_id = await managed_login(server, user, "phone", presence=False)
    await phone.send("<presence/>")
    reader = StanzaStream(phone, chunk=4096)
    cuts = 0
    while len(reader.message_ids) < count:
        target = min(count, len(reader.message_ids) + 300)
        await reader.until(lambda: len(reader.message_ids) >= target, timeout=60)
        if len(reader.message_ids) >= count:
            break
        drop(phone)                                        # a cut, mid-stream: no close, no ack
        cuts += 1
        await server.wait_for_log(f"event=hibernating jid={bob}/phone", timeout=10, count=cuts)
        phone, _ = await authenticated(server, user)
        await phone.send(f"<resume xmlns='{NS_SM}' previd='{sm_id}' h='{reader.handled}'/>")
        await phone.expect(r"<resumed [^>]*/>")
        reader = StanzaStream(phone, handled=reader.handled, chunk=4096, message_ids=reader.message_ids)
    assert cuts >= 5
    await reader.ping("done")
    assert_all_once(reader.message_ids, "c", count)
    await phone.close()
    await sender.close()
