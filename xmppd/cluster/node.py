"""This node's part in the cluster, on Redis (the keys and their use: xmppd/cluster/__init__.py)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lxml import etree
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from xmppd.cluster.remote import RemoteSession, registry_entry
from xmppd.config import ClusterOptions, ConfigError
from xmppd.host import LOCAL_ONLY, ForwardArrived, UserDataChanged
from xmppd.protocol.errors import ServiceUnavailable, StanzaError
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.stanza import PRESENCE, from_storage, make_element, to_storage
from xmppd.router import CURRENT_WRITES, KINDS, Stanza, bare_message_recipients, deliver_to_account

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

    from xmppd.host import Host
    from xmppd.services import Services
    from xmppd.session import Session

log = logging.getLogger(__name__)

ENGINE_DOWN = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)  # retried, not crashes

NODES = "xmppd:nodes"  # set: the names of the nodes that joined
CHANNEL = "xmppd:registry"  # pub/sub: each change of a node's sessions
CHANGED = "xmppd:changed"  # pub/sub: user data changed that nodes keep copies of
GROUP = "xmppd"  # the consumer group of every inbox
SEQ, EPOCH = "#seq", "#epoch"  # fields of a sessions hash beside the full JIDs
WRITE_BATCH = 256  # writes sent to Redis in one MULTI, at most
READ_BATCH = 256  # inbox entries read at once, at most
READ_BLOCK_MS = 1000
SEEN_FORWARDS = 100_000  # forward ids remembered against a write sent twice
# A dead node's keys go only while it is still dead (one of the same name may be starting);
# the node that removes them gets its sessions (and says they went unavailable).
FORGET_SCRIPT = """
if redis.call('exists', KEYS[1]) == 0 then
  local sessions = redis.call('hgetall', KEYS[2])
  redis.call('del', KEYS[2], KEYS[3])
  redis.call('srem', KEYS[4], ARGV[1])
  return sessions
end
return false
"""


def alive_key(node: str) -> str:
    return f"xmppd:node:{node}"


def sessions_key(node: str) -> str:
    return f"xmppd:sessions:{node}"


def inbox_key(node: str) -> str:
    return f"xmppd:inbox:{node}"


@dataclass(eq=False)
class Peer:
    """Another node as this one knows it: the incarnation, the last registry change
    applied, and its sessions by full JID. `dead`: dropped, its sessions still listed
    until what was sent to them is delivered again."""

    name: str
    epoch: str
    seq: int = 0
    sessions: dict[str, RemoteSession] = field(default_factory=dict)
    dead: bool = False


@dataclass(eq=False)
class Forward:
    """A stanza sent to another node's session, until that node answers "done"."""

    peer: Peer
    host: Host
    xml: bytes
    future: asyncio.Future


@dataclass
class Write:
    """Commands for the writer's next MULTI; `done` resolves once Redis took them."""

    apply: Callable[[Pipeline], object]
    done: asyncio.Future | None = None


class Cluster:
    def __init__(self, services: Services, options: ClusterOptions):
        self.services = services
        self.options = options
        self.name = services.config.node_name
        self.epoch = ""
        self.seq = 0  # of this node's registry changes, in this epoch
        self.peers: dict[str, Peer] = {}
        self.forwards: dict[str, Forward] = {}
        # What a dead node will not deliver, and then that node (Peer) to unlist, in order.
        self._again: asyncio.Queue[Forward | Peer] = asyncio.Queue()
        self._again_forwards = 0  # Forwards in `_again`
        self._dropped: set[str] = set()  # epochs of the nodes dropped: their registries end
        self._ids = itertools.count()
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()  # forwards handled
        self._outbox: asyncio.Queue[Write] = asyncio.Queue()
        self._applied = asyncio.Event()  # a registry change of another node was applied
        self._tasks: list[asyncio.Task] = []
        self._hooked: list[tuple[Host, str, Callable]] = []

    @property
    def _timeout_ms(self) -> int:
        return int(self.options.node_timeout * 1000)

    # ------------------------------------------------------------- start, stop

    async def start(self) -> None:
        self.redis = Redis.from_url(self.options.engine, decode_responses=True)
        self.reader = Redis.from_url(self.options.engine, decode_responses=True)  # its XREADGROUP blocks
        self.pubsub = self.redis.pubsub()
        try:
            await self.pubsub.subscribe(CHANNEL, CHANGED)  # first: a change made during the snapshot is not missed
        except redis_errors.RedisError as exc:
            raise ConfigError(
                f"{self.services.config.source}: cluster.engine: cannot reach {self.options.engine}: {exc}"
            ) from None
        await self._join(fresh_inbox=True)
        await self._load_snapshot()
        for host in self.services.directory.hosts():
            if not host.is_component:
                for name, handler in (
                    ("resource-bound", self._publish),
                    ("session-changed", self._publish),
                    ("session-closed", self._withdraw),
                    ("user-data-changed", self._changed),
                ):
                    host.bus.hook(name, handler)
                    self._hooked.append((host, name, handler))
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(coroutine)
            for coroutine in (
                self._write_loop(),
                self._listen(),
                self._read_inbox(),
                self._heartbeat(),
                self._deliver_again_loop(),
            )
        ]
        log.info("event=cluster-joined node=%s nodes=%d", self.name, len(self.peers) + 1)

    async def stop(self) -> None:
        """Leave: what is queued is written, then this node's keys go; the other nodes see
        it gone at their next check and deliver again what it did not confirm."""
        for host, name, handler in self._hooked:
            host.bus.unhook(name, handler)
        try:
            await asyncio.wait_for(self._write(Write(lambda pipe: None)), self.options.node_timeout)
        except Exception:
            log.warning("event=cluster-flush-failed node=%s", self.name)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.redis.delete(alive_key(self.name), sessions_key(self.name), inbox_key(self.name))
            await self.redis.srem(NODES, self.name)
        except Exception:
            log.warning("event=cluster-leave-failed node=%s", self.name)
        unanswered = list(self.forwards.values())  # their clients are gone with this node
        while not self._again.empty():
            unanswered.append(self._again.get_nowait())
        for forward in unanswered:
            if isinstance(forward, Forward) and not forward.future.done():
                forward.future.set_result(None)
        await self.pubsub.aclose()
        await self.reader.aclose()
        await self.redis.aclose()

    async def _join(self, *, fresh_inbox: bool) -> None:
        """Register a new incarnation of this node: what an earlier one left goes, and
        the others drop its sessions when they see the new epoch."""
        self.epoch, self.seq = secrets.token_hex(8), 0
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(sessions_key(self.name))
        pipe.hset(sessions_key(self.name), mapping={EPOCH: self.epoch, SEQ: 0})
        if fresh_inbox:
            pipe.delete(inbox_key(self.name))
        pipe.set(alive_key(self.name), self.epoch, px=self._timeout_ms)
        pipe.sadd(NODES, self.name)
        pipe.publish(CHANNEL, json.dumps({"n": self.name, "e": self.epoch, "s": 0}))
        await pipe.execute()
        await self._ensure_inbox()

    async def _ensure_inbox(self) -> None:
        try:
            await self.redis.xgroup_create(inbox_key(self.name), GROUP, id="$", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # ------------------------------------------------------------- the registry: ours

    async def _publish(self, session: Session) -> None:
        if not session.is_remote:  # the unavailable presence of a dead node's session
            self._change(session, registry_entry(session))

    async def _withdraw(self, session: Session) -> None:
        if not session.is_remote:
            self._change(session, None)

    def _change(self, session: Session, entry: dict | None) -> None:
        """Write a change of a local session into this node's hash and publish it, in order."""
        self.seq += 1
        jid, key = str(session.jid), sessions_key(self.name)
        value = json.dumps(entry) if entry is not None else None
        message = json.dumps({"n": self.name, "e": self.epoch, "s": self.seq, "j": jid, "v": value})
        seq = self.seq

        def apply(pipe):
            if value is None:
                pipe.hdel(key, jid)
                pipe.hset(key, SEQ, seq)
            else:
                pipe.hset(key, mapping={jid: value, SEQ: seq})
            pipe.publish(CHANNEL, message)

        self._write(Write(apply))

    async def _changed(self, change: UserDataChanged) -> None:
        """Tell the other nodes to forget their copy; the change's answer to the client
        waits until Redis sent it on."""
        message = json.dumps({"n": self.name, "k": change.kind, "o": change.owner})
        await self._write(Write(lambda pipe: pipe.publish(CHANGED, message)))

    async def _heard_changed(self, message: dict) -> None:
        if message["n"] == self.name:
            return
        try:
            host = self.services.directory.host(JID.parse(message["o"]).domain)
        except InvalidJID:
            return
        if host is not None:
            await host.bus.notify("user-data-changed-elsewhere", UserDataChanged(message["k"], message["o"]))

    # ------------------------------------------------------------- the registry: theirs

    async def _load_snapshot(self) -> None:
        for name in await self.redis.smembers(NODES):
            if name != self.name:
                await self._load_node(name)

    async def _load_node(self, name: str) -> None:
        """Take node `name`'s sessions from its hash (at start, or after a missed change)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.exists(alive_key(name))
        pipe.hgetall(sessions_key(name))
        alive, data = await pipe.execute()
        if not alive or EPOCH not in data:
            await self._forget(name)
            return
        epoch, seq = data.pop(EPOCH), int(data.pop(SEQ, 0))
        peer = self.peers.get(name)
        if peer is not None and peer.epoch != epoch:
            self._drop_peer(name)
            peer = None
        if peer is None:
            peer = self.peers[name] = Peer(name, epoch)
        peer.seq = seq
        for jid in set(peer.sessions) - set(data):
            self._set_remote(name, peer, jid, None)
        for jid, value in data.items():
            self._set_remote(name, peer, jid, value)
        self._applied.set()

    async def _apply(self, message: dict) -> None:
        """A change published by another node; one missed (a gap in its sequence) makes
        this node read that node's hash again."""
        name, epoch, seq = message["n"], message["e"], message["s"]
        if name == self.name:
            return
        peer = self.peers.get(name)
        if peer is None or peer.epoch != epoch:
            if seq == 0:  # a node (or a new incarnation of one) joined
                self._drop_peer(name)
                self.peers[name] = Peer(name, epoch)
                self._applied.set()
            else:
                await self._load_node(name)
            return
        if seq <= peer.seq:  # already in the snapshot
            return
        if seq > peer.seq + 1:
            await self._load_node(name)
            return
        peer.seq = seq
        self._set_remote(name, peer, message["j"], message["v"])
        self._applied.set()

    def _set_remote(self, name: str, peer: Peer, jid_text: str, value: str | None) -> None:
        try:
            jid = JID.parse(jid_text)
        except InvalidJID:
            return
        host = self.services.directory.host(jid.domain)
        if host is None:
            return
        if value is None:
            session = peer.sessions.pop(jid_text, None)
            if session is not None:
                self._unlist(session)
            return
        session = peer.sessions.get(jid_text)
        if session is None:
            session = peer.sessions[jid_text] = RemoteSession(self, host, jid, peer)
            host.remote.setdefault(jid.local, {})[jid.resource] = session
        session.update(json.loads(value))

    @staticmethod
    def _unlist(session: RemoteSession) -> None:
        resources = session.host.remote.get(session.jid.local)
        if resources and resources.get(session.jid.resource) is session:
            del resources[session.jid.resource]
            if not resources:
                del session.host.remote[session.jid.local]

    def _drop_peer(self, name: str) -> None:
        """Forget node `name`: what was forwarded to it and not confirmed, and what is
        sent to its sessions until they are unlisted, is delivered again by the rules, in
        the order it was sent; then its sessions leave the table (nothing routed after
        that overtakes it)."""
        peer = self.peers.pop(name, None)
        if peer is None:
            return
        peer.dead = True
        self._dropped.add(peer.epoch)
        for forward_id, forward in list(self.forwards.items()):
            if forward.peer is peer:
                del self.forwards[forward_id]
                self._deliver_later(forward)
        self._again.put_nowait(peer)
        log.info("event=cluster-node-dropped node=%s sessions=%d", name, len(peer.sessions))

    def _deliver_later(self, forward: Forward) -> None:
        self._again_forwards += 1
        self._again.put_nowait(forward)

    async def _deliver_again_loop(self) -> None:
        while True:
            item = await self._again.get()
            if isinstance(item, Peer):
                if self._again_forwards:  # sent to its sessions meanwhile: after those
                    self._again.put_nowait(item)
                else:
                    for session in item.sessions.values():
                        self._unlist(session)
                continue
            self._again_forwards -= 1
            try:
                await self.deliver_again(item.host, from_storage(item.xml))
            except Exception:
                log.exception("event=cluster-deliver-again-failed node=%s", item.peer.name)
            finally:
                if not item.future.done():
                    item.future.set_result(None)

    async def _forget(self, name: str) -> None:
        """A dead node: its sessions leave this node's table, its keys leave Redis. The
        one node that removes them sends the unavailable presence its available sessions
        never sent (RFC 6121 4.5.2), to their contacts and their users' other resources."""
        self._drop_peer(name)
        left = await self.redis.eval(
            FORGET_SCRIPT, 4, alive_key(name), sessions_key(name), inbox_key(name), NODES, name
        )
        if left:  # in the background: the heartbeat goes on
            self.services.tasks.spawn(self._went_away(dict(zip(left[::2], left[1::2]))))

    async def _went_away(self, sessions: dict[str, str]) -> None:
        for jid_text, value in sessions.items():
            try:
                jid = JID.parse(jid_text)
            except InvalidJID:
                continue  # the #seq and #epoch fields
            host = self.services.directory.host(jid.domain)
            entry = json.loads(value)
            if host is None or not entry["available"]:
                continue
            session = RemoteSession(self, host, jid, Peer("", "", dead=True))
            session.update(entry)
            session.closed = True  # nothing goes to it any more
            stanza = Stanza(
                make_element(PRESENCE, {"type": "unavailable", "from": jid_text}), "presence", jid, None, origin=session
            )
            stanza.target = "broadcast"
            try:
                await host.bus.fire("presence/broadcast", stanza)
            except Exception:
                log.exception("event=cluster-unavailable-failed jid=%s", jid)

    async def _caught_up(self, name: str, epoch: str, seq: int) -> None:
        """Wait until this node applied node `name`'s registry change `seq`: a stanza it
        forwarded then meets the state it was routed with (a resource that enabled
        carbons there before is known here). A change not heard within a heartbeat (the
        subscription was lost) is read from that node's hash."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.heartbeat
        while epoch not in self._dropped and (
            (peer := self.peers.get(name)) is None or peer.epoch != epoch or peer.seq < seq
        ):
            self._applied.clear()
            try:
                await asyncio.wait_for(self._applied.wait(), deadline - loop.time())
            except TimeoutError:
                await self._load_node(name)
                return

    # ------------------------------------------------------------- forwarding

    def forward(self, session: RemoteSession, element: etree._Element) -> None:
        """Send `element` to `session` on its node; the stanza being routed (if one from a
        client is) counts as handled only once that node answered."""
        xml = to_storage(element)
        forward = Forward(session.peer, session.host, xml, asyncio.get_running_loop().create_future())
        if session.peer.dead:
            self._deliver_later(forward)
        else:
            forward_id = str(next(self._ids))
            self.forwards[forward_id] = forward
            fields = {
                "t": "fwd",
                "id": forward_id,
                "from": self.name,
                "epoch": self.epoch,
                "seq": self.seq,
                "to": str(session.jid),
                "xml": xml,
            }
            self._write(Write(lambda pipe: pipe.xadd(inbox_key(session.node), fields)))
        writes = CURRENT_WRITES.get()
        if writes is not None:
            writes.append(forward.future)

    def close_remote(self, session: RemoteSession, condition: str | None, text: str | None) -> None:
        self._command(session, {"t": "close", "to": str(session.jid), "condition": condition or "", "text": text or ""})

    def deliver_offline(self, session: RemoteSession) -> None:
        self._command(session, {"t": "offline", "to": str(session.jid)})

    def _command(self, session: RemoteSession, fields: dict) -> None:
        if not session.peer.dead:
            self._write(Write(lambda pipe: pipe.xadd(inbox_key(session.node), fields)))

    async def deliver_again(self, host: Host | None, element: etree._Element) -> None:
        """A forwarded stanza whose session is gone, or whose node died: delivered by the
        rules to this node's sessions only (never forwarded twice), with the extensions'
        hooks not run again (they ran where it was routed): a message goes to another
        resource or offline storage, an iq get/set is refused, anything else dropped."""
        kind = KINDS.get(element.tag)
        try:
            stanza = Stanza(element, kind, JID.parse(element.get("from")), JID.parse(element.get("to")))
        except (InvalidJID, TypeError):
            return
        error: StanzaError | None = None
        if host is None:
            return
        if kind == "message":
            token = LOCAL_ONLY.set(True)
            try:
                recipients = bare_message_recipients(host, stanza.to.local, stanza.type or "normal")
            finally:
                LOCAL_ONLY.reset(token)
            try:
                await deliver_to_account(host, stanza, recipients)
                await asyncio.gather(*stanza.writes, return_exceptions=True)
            except StanzaError as refused:
                error = refused
        elif kind == "iq" and stanza.type in ("get", "set"):
            error = ServiceUnavailable()
        if error is not None:
            await self.services.delivery.bounce(stanza, error)

    # ------------------------------------------------------------- the inbox

    async def _read_inbox(self) -> None:
        """The one reader of this node's inbox: entries are handled one after the other,
        in the order the stream has them, so that the stanzas of one sender (one node
        writes its forwards in order) reach a recipient in order."""
        key = inbox_key(self.name)
        while True:
            try:
                reply = await self.reader.xreadgroup(
                    GROUP, self.name, {key: ">"}, count=READ_BATCH, block=READ_BLOCK_MS
                )
            except ENGINE_DOWN as exc:
                log.warning("event=cluster-inbox-read-failed node=%s error=%s", self.name, exc)
                await asyncio.sleep(self.options.heartbeat)
                continue
            except redis_errors.ResponseError as exc:  # NOGROUP: taken for dead, its inbox went
                log.warning("event=cluster-inbox-read-failed node=%s error=%s", self.name, exc)
                await self._ensure_inbox()
                continue
            for _, entries in reply or ():
                for _, fields in entries:
                    try:
                        await self._handle(fields)
                    except Exception:
                        log.exception("event=cluster-inbox-entry-failed node=%s", self.name)
                ids = [entry_id for entry_id, _ in entries]
                self._write(Write(lambda pipe, ids=ids: (pipe.xack(key, GROUP, *ids), pipe.xdel(key, *ids))))

    async def _handle(self, fields: dict) -> None:
        kind = fields.get("t")
        if kind == "done":
            forward = self.forwards.pop(fields["id"], None)
            if forward is not None and not forward.future.done():
                forward.future.set_result(None)
        elif kind == "fwd":
            try:
                key = f"{fields['from']}/{fields['epoch']}/{fields['id']}"
                if key not in self._seen:  # a write retried after a lost reply comes twice
                    self._seen[key] = None
                    if len(self._seen) > SEEN_FORWARDS:
                        self._seen.popitem(last=False)
                    await self._caught_up(fields["from"], fields["epoch"], int(fields["seq"]))
                    await self._deliver(JID.parse(fields["to"]), from_storage(fields["xml"].encode()))
            finally:
                origin = fields["from"]
                answer = {"t": "done", "id": fields["id"]}
                self._write(Write(lambda pipe: pipe.xadd(inbox_key(origin), answer)))
        elif kind == "close":
            session = self._local(JID.parse(fields["to"]))
            if session is not None:
                session.close(fields["condition"] or None, fields["text"] or None)
                await session.host.end_session(session)
        elif kind == "offline":
            session = self._local(JID.parse(fields["to"]))
            if session is not None and session.available:
                await session.host.bus.fire("message/offline/deliver", session)

    def _local(self, jid: JID) -> Session | None:
        host = self.services.directory.host(jid.domain)
        session = host.sessions.get(jid.local, {}).get(jid.resource) if host is not None else None
        return session if session is not None and not session.closed else None

    async def _deliver(self, to: JID, element: etree._Element) -> None:
        session = self._local(to)
        if session is not None:
            if not await session.host.bus.fire("forward-arrived", ForwardArrived(session, element)):
                session.send(element)  # its flow control and XEP-0198 apply here
        else:
            log.info("event=cluster-forward-session-gone jid=%s", to)
            await self.deliver_again(self.services.directory.host(to.domain), element)

    # ------------------------------------------------------------- background

    async def _write_loop(self) -> None:
        """The one writer: registry changes, forwards and answers go to Redis in the order
        they were made, batched in a MULTI. While Redis cannot be reached, a batch is sent
        again every heartbeat and what comes after waits (the stanzas forwarded are not
        acked meanwhile); one whose reply was lost may be taken twice: a registry change
        comes again with the same sequence number and a forward with the same id, which
        the receivers skip."""
        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty() and len(batch) < WRITE_BATCH:
                batch.append(self._outbox.get_nowait())
            while True:
                pipe = self.redis.pipeline(transaction=True)
                for write in batch:
                    write.apply(pipe)
                try:
                    await pipe.execute()
                except ENGINE_DOWN as exc:
                    log.warning("event=cluster-write-retried node=%s writes=%d error=%s", self.name, len(batch), exc)
                    await asyncio.sleep(self.options.heartbeat)
                    continue
                except Exception:
                    log.exception("event=cluster-write-failed node=%s writes=%d", self.name, len(batch))
                break
            for write in batch:
                write.done.set_result(None)

    def _write(self, write: Write) -> asyncio.Future:
        """Queue `write`; the future resolves once it went out (what `stop` waits for)."""
        write.done = asyncio.get_running_loop().create_future()
        self._outbox.put_nowait(write)
        return write.done

    async def _listen(self) -> None:
        while True:
            try:
                async for message in self.pubsub.listen():
                    if message["type"] == "message":
                        try:
                            if message["channel"] == CHANGED:
                                await self._heard_changed(json.loads(message["data"]))
                            else:
                                await self._apply(json.loads(message["data"]))
                        except ENGINE_DOWN:
                            raise
                        except Exception:
                            log.exception("event=cluster-registry-change-failed node=%s", self.name)
            except ENGINE_DOWN as exc:
                log.warning("event=cluster-registry-lost node=%s error=%s", self.name, exc)
            await asyncio.sleep(self.options.heartbeat)
            try:  # changes made meanwhile are in the hashes
                await self.pubsub.subscribe(CHANNEL, CHANGED)
                await self._load_snapshot()
            except ENGINE_DOWN as exc:
                log.warning("event=cluster-registry-resubscribe-failed node=%s error=%s", self.name, exc)

    async def _heartbeat(self) -> None:
        """Refresh this node's liveness key; check the others'. A node whose key is gone is
        dead. This node's own key gone (it stalled past node_timeout, and the others
        dropped it) makes it join again and publish its sessions anew."""
        while True:
            await asyncio.sleep(self.options.heartbeat)
            try:
                if not await self.redis.set(alive_key(self.name), self.epoch, px=self._timeout_ms, xx=True):
                    log.warning("event=cluster-node-expired node=%s", self.name)
                    await self._join(fresh_inbox=False)
                    for host in self.services.directory.hosts():
                        for resources in list(host.sessions.values()):
                            for session in list(resources.values()):
                                await self._publish(session)
                names = sorted((set(self.peers) | set(await self.redis.smembers(NODES))) - {self.name})
                pipe = self.redis.pipeline(transaction=False)
                for name in names:
                    pipe.exists(alive_key(name))
                for name, alive in zip(names, await pipe.execute()):
                    if not alive:
                        await self._forget(name)
                    elif name not in self.peers:  # its first change was missed
                        await self._load_node(name)
            except ENGINE_DOWN as exc:
                log.warning("event=cluster-heartbeat-failed node=%s error=%s", self.name, exc)
            except Exception:
                log.exception("event=cluster-heartbeat-failed node=%s", self.name)
