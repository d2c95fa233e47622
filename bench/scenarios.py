"""The benchmark scenarios, and the one-off set-up (accounts, rosters) they need.

A scenario is an `async def run(ctx) -> dict` of figures. Names of figures say
their unit and direction: ``*_per_s`` (higher is better), ``*_ms``, ``*_kib``,
``*_mib`` (lower is better); ``*_pct`` and counts are context.
"""

import asyncio
import collections
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import xmpp
from .xmpp import attr, login, ping, register

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"


@dataclass(frozen=True)
class Sizes:
    login_seconds: float = 8.0
    login_concurrency: int = 50
    login_pool: int = 500
    idle_steps: tuple = (1000, 5000, 10000)
    idle_settle: float = 3.0
    pairs: int = 100
    pair_inflight: int = 10
    sat_warmup: float = 1.0
    sat_seconds: float = 8.0
    rate: int = 1000
    rate_seconds: float = 8.0
    muc_occupants: int = 100
    muc_inflight: int = 20
    muc_seconds: float = 8.0
    offline_messages: int = 5000
    drain_messages: int = 10000
    slow_bytes_per_s: int = 10000
    slow_rcvbuf: int = 4096
    slow_timeout: float = 1200.0
    stall_sessions: int = 100
    stall_messages: int = 5000
    roster_contacts: int = 500
    roster_reps: int = 3
    open_concurrency: int = 100
    scenario_timeout: float = 300.0


FULL = Sizes()
QUICK = Sizes(
    login_seconds=2.0,
    login_pool=100,
    idle_steps=(100, 300, 500),
    idle_settle=1.0,
    pairs=20,
    sat_warmup=0.5,
    sat_seconds=2.0,
    rate=500,
    rate_seconds=2.0,
    muc_occupants=20,
    muc_inflight=10,
    muc_seconds=2.0,
    offline_messages=500,
    drain_messages=500,
    slow_timeout=120.0,
    stall_sessions=20,
    stall_messages=500,
    roster_contacts=50,
    roster_reps=1,
    scenario_timeout=120.0,
)


class Ctx:
    """What a scenario gets: the server (for RSS/CPU), the target, the sizes."""

    def __init__(self, server, target: xmpp.Target, sizes: Sizes, log):
        self.server = server
        self.target = target
        self.sizes = sizes
        self.log = log
        self.domain = target.domain

    def bare(self, user):
        return f"{user}@{self.domain}"


# ---------------------------------------------------------------- accounts


def account(name: str):
    """(username, password) of a bench account; passwords are long enough for any policy."""
    return name, "bench-password-" + name


def pool_user(i: int):
    return account(f"u{i:05d}")


def roster_users(n: int):
    owner = account(f"r{n}o")
    contacts = [account(f"r{n}c{i:04d}") for i in range(n)]
    return owner, contacts


OFFLINE_SENDER = account("offs")
OFFLINE_RECEIVER = account("offr")


class Markers:
    """Set-up already done against this server's data dir (kept between runs)."""

    def __init__(self, state_dir: Path):
        self.path = state_dir / "markers.json"
        try:
            self.data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def get(self, key, default=None):
        return self.data.get(key, default)

    def set(self, key, value):
        self.data[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data))


async def bounded(items, fn, concurrency, retries=2):
    """Run fn(item) for every item, at most `concurrency` at once; results in order."""
    items = list(items)
    results = [None] * len(items)
    it = iter(range(len(items)))
    errors = []

    async def worker():
        for i in it:
            for attempt in range(retries + 1):
                try:
                    results[i] = await fn(items[i])
                    break
                except (TimeoutError, OSError, xmpp.XMPPError) as e:
                    if attempt == retries:
                        errors.append(e)
                    else:
                        await asyncio.sleep(0.2 * (attempt + 1))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(items)) or 1)))
    if errors:
        raise xmpp.XMPPError(f"{len(errors)} of {len(items)} failed; first: {errors[0]!r}")
    return results


async def ensure_accounts(ctx: Ctx, users, marker_key: str, markers: Markers):
    """Register `users` (in-band, XEP-0077) unless a marker says they exist."""
    if markers.get(marker_key):
        return
    ctx.log(f"  registering {len(users)} accounts ({marker_key})")
    t0 = time.monotonic()

    async def reg(u):
        async with asyncio.timeout(ctx.target.timeout):
            return await register(ctx.target, u[0], u[1])

    await bounded(users, reg, 32)
    ctx.log(f"  registered in {time.monotonic() - t0:.1f}s")
    markers.set(marker_key, True)


async def ensure_pool(ctx: Ctx, n: int, markers: Markers):
    have = markers.get("pool", 0)
    if have < n:
        ctx.log(f"  registering pool accounts {have}..{n - 1}")
        t0 = time.monotonic()

        async def reg(i):
            u, p = pool_user(i)
            async with asyncio.timeout(ctx.target.timeout):
                return await register(ctx.target, u, p)

        await bounded(range(have, n), reg, 32)
        markers.set("pool", n)
        ctx.log(f"  registered in {time.monotonic() - t0:.1f}s")
    await warm_scram(ctx, [pool_user(i) for i in range(n)])


async def warm_scram(ctx: Ctx, users):
    """Log every account in once so that its SaltedPassword is cached (generator side)."""
    known = ctx.target.cache.users()
    todo = [u for u in users if u[0] not in known]
    if not todo:
        return
    ctx.log(f"  caching SCRAM keys for {len(todo)} accounts")

    async def auth(u):
        async with asyncio.timeout(ctx.target.timeout):
            conn = await login(ctx.target, u[0], u[1], bind=False)
            conn.close()

    try:
        await bounded(todo, auth, 50)
    finally:
        ctx.target.cache.save()


async def open_sessions(ctx: Ctx, users, presence=True, concurrency=None, resource="bench", **kw):
    """Log `users` in (bound, optionally available) and return their connections;
    `kw` goes to `login` (sm=True, rcvbuf=...)."""
    concurrency = concurrency or ctx.sizes.open_concurrency

    async def one(u):
        async with asyncio.timeout(ctx.target.timeout):
            conn = await login(ctx.target, u[0], u[1], resource=resource, presence=presence, **kw)
            if presence:
                await ping(conn, ctx.domain)  # the server has processed the presence
            return conn

    return await bounded(users, one, concurrency, retries=1)


def close_all(conns):
    for c in conns:
        if c is not None:
            c.close()


def discard(_data):
    pass


# ---------------------------------------------------------------- measuring


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * len(values) + 0.5)) - 1))
    return values[k]


def ms(ns):
    return None if ns is None else round(ns / 1e6, 3)


class Usage:
    """CPU used by the server and by this generator over a window."""

    def __init__(self, server):
        self.server = server
        self.t0 = time.monotonic()
        self.s0 = server.cpu_seconds()
        self.q0 = server.runqueue_seconds()
        self.g0 = time.process_time()

    def server_seconds(self):
        return max(1e-3, self.server.cpu_seconds() - self.s0)

    def result(self):
        wall = max(1e-9, time.monotonic() - self.t0)
        return {
            "server_cpu_pct": round(100 * (self.server.cpu_seconds() - self.s0) / wall, 1),
            "gen_cpu_pct": round(100 * (time.process_time() - self.g0) / wall, 1),
            # runnable but waiting for CPU 0: high when the machine is shared
            "server_cpu_wait_pct": round(100 * (self.server.runqueue_seconds() - self.q0) / wall, 1),
        }

    def per_cpu_s(self, count):
        """Work done per second of server CPU: steady even when the machine is shared."""
        return round(count / self.server_seconds(), 1)


class Deliveries:
    """Counts <message/>s carrying a body in a raw byte stream; returns the bodies.

    Only complete messages are looked at (up to the last ``</message>``); the
    rest is carried over to the next chunk.
    """

    __slots__ = ("carry",)

    def __init__(self):
        self.carry = b""

    def feed(self, data: bytes) -> list:
        buf = self.carry + data if self.carry else data
        end = buf.rfind(b"</message>")
        if end < 0:
            self.carry = buf if len(buf) < 1 << 20 else buf[-65536:]
            return []
        end += 10
        self.carry = buf[end:]
        bodies = []
        i = buf.find(b"<body", 0, end)
        while i >= 0:
            j = buf.find(b">", i) + 1
            k = buf.find(b"</body>", j)
            bodies.append(buf[j:k])
            i = buf.find(b"<body", k, end)
        return bodies


async def wait_until(pred, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


async def watch_progress(counter, seconds, stall=5.0, what="deliveries"):
    """Sleep `seconds`, raising if counter() makes no progress for `stall` seconds."""
    end = time.monotonic() + seconds
    last, last_t = counter(), time.monotonic()
    while True:
        now = time.monotonic()
        if now >= end:
            return
        await asyncio.sleep(min(0.25, end - now))
        c = counter()
        if c != last:
            last, last_t = c, time.monotonic()
        elif time.monotonic() - last_t > stall:
            raise xmpp.XMPPError(f"no {what} for {stall:.0f}s (stalled at {c})")


# ---------------------------------------------------------------- login


async def run_login(ctx: Ctx) -> dict:
    s = ctx.sizes
    users = [pool_user(i) for i in range(s.login_pool)]
    out = {}
    for mode in ("plain", "tls"):
        lat, errors, first_error = [], 0, None
        end = time.monotonic() + s.login_seconds

        async def worker(w):
            nonlocal errors, first_error
            k = w
            while time.monotonic() < end:
                user, pw = users[k % len(users)]
                k += s.login_concurrency
                t0 = time.perf_counter_ns()
                try:
                    async with asyncio.timeout(ctx.target.timeout):
                        conn = await login(ctx.target, user, pw, tls=(mode == "tls"), resource=f"l{k}")
                except (TimeoutError, OSError, xmpp.XMPPError) as e:
                    errors += 1
                    first_error = first_error or repr(e)
                    if errors > 100:
                        return
                    await asyncio.sleep(0.05)
                    continue
                lat.append(time.perf_counter_ns() - t0)
                conn.close()

        t0 = time.monotonic()
        usage = Usage(ctx.server)
        await asyncio.gather(*(worker(w) for w in range(s.login_concurrency)))
        elapsed = time.monotonic() - t0
        out.update({f"{mode}_{k}": v for k, v in usage.result().items()})
        if not lat:
            raise xmpp.XMPPError(f"{mode}: no login succeeded: {first_error}")
        out[f"{mode}_logins_per_s"] = round(len(lat) / elapsed, 1)
        out[f"{mode}_logins_per_cpu_s"] = usage.per_cpu_s(len(lat))
        out[f"{mode}_p50_ms"] = ms(percentile(lat, 50))
        out[f"{mode}_p99_ms"] = ms(percentile(lat, 99))
        out[f"{mode}_errors"] = errors
        if first_error:
            out[f"{mode}_first_error"] = first_error[:200]
        await asyncio.sleep(0.5)  # let the server finish closing
    out["concurrency"] = s.login_concurrency
    return out


# ---------------------------------------------------------------- idle_memory


async def run_idle_memory(ctx: Ctx) -> dict:
    s = ctx.sizes
    await asyncio.sleep(s.idle_settle)
    baseline = ctx.server.rss_kib()
    out = {"baseline_rss_mib": round(baseline / 1024, 1)}
    conns = []
    try:
        for step in s.idle_steps:
            more = await open_sessions(ctx, [pool_user(i) for i in range(len(conns), step)])
            for c in more:
                c.set_data_handler(discard)
            conns += more
            await asyncio.sleep(s.idle_settle)
            rss = ctx.server.rss_kib()
            out[f"per_session_{step}_kib"] = round((rss - baseline) / step, 2)
        out["rss_at_max_mib"] = round(rss / 1024, 1)
    finally:
        close_all(conns)
    return out


# ---------------------------------------------------------------- one_to_one

BODY_END = b"</body></message>"


async def run_one_to_one(ctx: Ctx) -> dict:
    s = ctx.sizes
    conns = await open_sessions(ctx, [pool_user(i) for i in range(2 * s.pairs)])
    senders, receivers = conns[0::2], conns[1::2]
    prefixes = [f"<message to='{ctx.bare(r.user)}' type='chat'><body>".encode() for r in receivers]

    class St:
        mode = "sat"  # "sat": each delivery sends one more; "fixed": record only
        counting = False
        delivered = 0
        lat = []

    st = St()

    def handler(i):
        d = Deliveries()
        sender, prefix = senders[i], prefixes[i]

        def on_data(data):
            bodies = d.feed(data)
            if not bodies:
                return
            now = time.perf_counter_ns()
            n = len(bodies)
            if st.counting:
                st.delivered += n
                st.lat.extend([now - int(b) for b in bodies])
            if st.mode == "sat":
                sender.write((prefix + str(now).encode() + BODY_END) * n)

        return on_data

    for c in senders:
        c.set_data_handler(discard)
    for i, r in enumerate(receivers):
        r.set_data_handler(handler(i))

    out = {"pairs": s.pairs}
    try:
        # saturation: keep pair_inflight messages outstanding per pair
        now = str(time.perf_counter_ns()).encode()
        for i, c in enumerate(senders):
            c.write((prefixes[i] + now + BODY_END) * s.pair_inflight)
        await asyncio.sleep(s.sat_warmup)
        st.counting = True
        usage = Usage(ctx.server)
        t0 = time.monotonic()
        await watch_progress(lambda: st.delivered, s.sat_seconds)
        st.counting = False
        elapsed = time.monotonic() - t0
        out["sat_msgs_per_s"] = round(st.delivered / elapsed, 1)
        out["sat_msgs_per_cpu_s"] = usage.per_cpu_s(st.delivered)
        out["sat_p50_ms"] = ms(percentile(st.lat, 50))
        out["sat_p99_ms"] = ms(percentile(st.lat, 99))
        out.update({"sat_" + k: v for k, v in usage.result().items()})
        st.mode = "fixed"
        # drain what is still in flight
        last = -1
        st.counting = True
        st.delivered = 0
        while st.delivered != last:
            last = st.delivered
            await asyncio.sleep(0.3)

        async def fixed_rate(phase: str, rate: int):
            """`rate` messages/s spread round-robin over the pairs for rate_seconds."""
            st.delivered, st.lat = 0, []
            total = int(rate * s.rate_seconds)
            sent = 0
            usage = Usage(ctx.server)
            t0 = time.monotonic()
            while sent < total:
                due = min(total, int((time.monotonic() - t0) * rate) + 1)
                if due > sent:
                    now = str(time.perf_counter_ns()).encode()
                    while sent < due:
                        i = sent % s.pairs
                        senders[i].write(prefixes[i] + now + BODY_END)
                        sent += 1
                await asyncio.sleep(0.001)
            send_elapsed = time.monotonic() - t0
            await wait_until(lambda: st.delivered >= total, 10.0)
            out[f"{phase}_target_per_s"] = rate
            out[f"{phase}_sent_per_s"] = round(total / send_elapsed, 1)
            out[f"{phase}_p50_ms"] = ms(percentile(st.lat, 50))
            out[f"{phase}_p99_ms"] = ms(percentile(st.lat, 99))
            out[f"{phase}_lost"] = total - st.delivered
            out.update({f"{phase}_{k}": v for k, v in usage.result().items()})

        await fixed_rate("half", int(out["sat_msgs_per_s"] / 2))  # half the saturation rate
        await fixed_rate("rate", s.rate)  # the fixed 1,000 messages/s
    finally:
        close_all(conns)
    return out


# ---------------------------------------------------------------- muc


async def muc_join(conn, room: str, nick: str) -> bytes:
    """Join `room` as `nick` without history; returns our own presence from the room."""
    full = f"{room}/{nick}"
    conn.write(f"<presence to='{full}'><x xmlns='{NS_MUC}'><history maxstanzas='0'/></x></presence>".encode())
    while True:
        s = await conn.next()
        if s.startswith(b"<presence") and attr(s, "from") == full:
            if attr(s, "type") == "error":
                raise xmpp.XMPPError(f"cannot join {full}: {s[:300]!r}")
            return s


async def muc_create(conn, room: str, nick: str):
    """Join first; if the room is new (status 201), accept the default config (instant room)."""
    s = await muc_join(conn, room, nick)
    if b"'201'" in s or b'"201"' in s:
        iq_id = xmpp.new_id("cfg")
        conn.write(
            f"<iq type='set' id='{iq_id}' to='{room}'><query xmlns='{NS_MUC_OWNER}'>"
            "<x xmlns='jabber:x:data' type='submit'/></query></iq>".encode()
        )
        reply = await conn.iq_reply(iq_id)
        if attr(reply, "type") != "result":
            raise xmpp.XMPPError(f"instant room refused: {reply[:300]!r}")


async def run_muc(ctx: Ctx) -> dict:
    s = ctx.sizes
    occ = s.muc_occupants
    room = f"bench{os.getpid()}t{int(time.time() * 1000) % 10**9}@{ctx.target.muc_domain}"
    conns = await open_sessions(ctx, [pool_user(i) for i in range(occ)])
    try:
        async with asyncio.timeout(ctx.target.timeout):
            await muc_create(conns[0], room, conns[0].user)

        async def join(c):
            async with asyncio.timeout(ctx.target.timeout):
                await muc_join(c, room, c.user)

        await bounded(conns[1:], join, 10, retries=0)
        prefixes = [f"<message to='{room}' type='groupchat'><body>".encode() for _ in conns]

        class St:
            stop = False
            counting = False
            next_seq = 0
            pending = {}
            delivered = 0
            completed = 0
            lat = []

        st = St()

        def send_one(now):
            seq = st.next_seq
            st.next_seq = seq + 1
            key = str(seq).encode()
            st.pending[key] = 0
            i = seq % occ
            conns[i].write(prefixes[i] + now + b":" + key + BODY_END)

        def handler():
            d = Deliveries()

            def on_data(data):
                bodies = d.feed(data)
                if not bodies:
                    return
                now = time.perf_counter_ns()
                pending = st.pending
                for b in bodies:
                    ts, _, key = b.partition(b":")
                    c = pending.get(key)
                    if c is None:
                        continue
                    if st.counting:
                        st.delivered += 1
                        st.lat.append(now - int(ts))
                    if c + 1 >= occ:
                        del pending[key]
                        if st.counting:
                            st.completed += 1
                        if not st.stop:
                            send_one(str(time.perf_counter_ns()).encode())
                    else:
                        pending[key] = c + 1

            return on_data

        for c in conns:
            c.set_data_handler(handler())
        await asyncio.sleep(0.5)  # late presence broadcasts settle
        now = str(time.perf_counter_ns()).encode()
        for _ in range(s.muc_inflight):
            send_one(now)
        await watch_progress(lambda: st.next_seq, s.sat_warmup, what="room messages")
        st.counting = True
        usage = Usage(ctx.server)
        t0 = time.monotonic()
        await watch_progress(lambda: st.next_seq, s.muc_seconds, what="room messages")
        st.counting = False
        elapsed = time.monotonic() - t0
        st.stop = True
        out = {
            "occupants": occ,
            "delivered_per_s": round(st.delivered / elapsed, 1),
            "messages_per_s": round(st.completed / elapsed, 1),
            "delivered_per_cpu_s": usage.per_cpu_s(st.delivered),
            "p50_ms": ms(percentile(st.lat, 50)),
            "p99_ms": ms(percentile(st.lat, 99)),
        }
        out.update(usage.result())
        await wait_until(lambda: not st.pending, 5.0)
    finally:
        close_all(conns)
    return out


# ---------------------------------------------------------------- offline_drain


async def drain_leftovers(ctx: Ctx):
    """Log the receiver in once so that nothing is queued for it from an earlier run."""
    user, pw = OFFLINE_RECEIVER
    async with asyncio.timeout(ctx.target.timeout):
        conn = await login(ctx.target, user, pw, resource="drain", presence=True)
        await ping(conn, ctx.domain)
    seen = [0]

    def on_data(data):
        seen[0] += data.count(b"</message>")

    conn.set_data_handler(on_data)
    last = -1
    while seen[0] != last:
        last = seen[0]
        await asyncio.sleep(0.5)
    conn.close()
    return seen[0]


async def send_messages(ctx: Ctx, sender, to: str, n: int, key: str) -> int:
    """Send `n` chat messages with ids `key`0 .. `key`n-1 to `to`, 250 at a time, each
    batch followed by a ping: one batch in flight, all processed on return. Returns how
    many the server bounced (a message error back to the sender)."""
    batch, refused = 250, 0
    for start in range(0, n, batch):
        now = str(time.time_ns()).encode()
        iq_id = xmpp.new_id("ping")
        sender.write(
            b"".join(
                f"<message to='{to}' type='chat' id='{key}{k}'><body>".encode()
                + now
                + b":"
                + str(k).encode()
                + BODY_END
                for k in range(start, min(n, start + batch))
            )
            + f"<iq type='get' id='{iq_id}' to='{ctx.domain}'><ping xmlns='{xmpp.NS_PING}'/></iq>".encode()
        )
        while True:
            st = await sender.next()
            if st.startswith(b"<message") and attr(st, "type") == "error":
                refused += 1
            elif st.startswith(b"<iq") and attr(st, "id") == iq_id:
                break
    return refused


async def store_offline(ctx: Ctx, n: int):
    """Empty the offline receiver's queue, then send it `n` messages (ids o0 .. o<n-1>)
    while it is offline; (seconds, server CPU seconds) it took."""
    await drain_leftovers(ctx)
    await asyncio.sleep(0.3)
    sender = None
    try:
        async with asyncio.timeout(ctx.target.timeout * 4):
            sender = await login(ctx.target, *OFFLINE_SENDER, resource="send")
            t0 = time.monotonic()
            store_usage = Usage(ctx.server)
            refused = await send_messages(ctx, sender, ctx.bare(OFFLINE_RECEIVER[0]), n, "o")
            if refused:
                raise xmpp.XMPPError(
                    f"{refused} of {n} messages refused while storing them "
                    "offline: check the offline queue limits in servers.py"
                )
            store_elapsed = time.monotonic() - t0
            store_cpu = store_usage.server_seconds()
    finally:
        if sender is not None:
            sender.close()
    await asyncio.sleep(1.0)  # let any write-behind storage commit
    return store_elapsed, store_cpu


async def run_offline_drain(ctx: Ctx) -> dict:
    s = ctx.sizes
    n = s.offline_messages
    store_elapsed, store_cpu = await store_offline(ctx, n)

    user, pw = OFFLINE_RECEIVER
    got = [0]
    done = asyncio.get_running_loop().create_future()
    d = Deliveries()

    def on_data(data):
        got[0] += len(d.feed(data))
        if got[0] >= n and not done.done():
            done.set_result(time.perf_counter())

    t_connect = time.perf_counter()
    async with asyncio.timeout(ctx.target.timeout):
        conn = await login(ctx.target, user, pw, resource="drain")
    try:
        conn.set_data_handler(on_data)
        t0 = time.perf_counter()
        drain_usage = Usage(ctx.server)
        conn.write(b"<presence/>")
        try:
            async with asyncio.timeout(ctx.sizes.scenario_timeout / 2):
                t1 = await done
        except TimeoutError:
            raise xmpp.XMPPError(f"only {got[0]} of {n} offline messages delivered") from None
        drain_cpu = drain_usage.server_seconds()
    finally:
        conn.close()
    return {
        "messages": n,
        "store_msgs_per_s": round(n / store_elapsed, 1),
        "store_msgs_per_cpu_s": round(n / store_cpu, 1),
        "drain_server_cpu_ms": round(drain_cpu * 1000, 1),
        "drain_ms": round((t1 - t0) * 1000, 1),
        "drain_msgs_per_s": round(n / (t1 - t0), 1),
        "login_to_drained_ms": round((t1 - t_connect) * 1000, 1),
    }


async def setup_offline(ctx: Ctx, markers: Markers):
    await ensure_accounts(ctx, [OFFLINE_SENDER, OFFLINE_RECEIVER], "offline_accounts", markers)
    await warm_scram(ctx, [OFFLINE_SENDER, OFFLINE_RECEIVER])


# ---------------------------------------------------------------- sm_drain, slow_drain


class Arrivals:
    """Messages received, counted by id (those starting with `key`): how many arrived,
    how many of them more than once, when the last new one came."""

    def __init__(self, key: str, n: int):
        self.prefix = key
        self.n = n
        self.seen = collections.Counter()
        self.last = None
        self.complete = asyncio.Event()

    def stanza(self, st: bytes):
        if not st.startswith(b"<message"):
            return
        mid = attr(st, "id")
        if mid is None or not mid.startswith(self.prefix):
            return
        self.seen[mid] += 1
        if self.seen[mid] == 1:
            self.last = time.perf_counter()
            if len(self.seen) >= self.n:
                self.complete.set()

    def total(self) -> int:
        return sum(self.seen.values())

    def figures(self) -> dict:
        return {
            "received": len(self.seen),
            "lost": self.n - len(self.seen),
            "duplicated": self.total() - len(self.seen),
        }


async def quiet(counter, seconds: float, limit: float):
    """Wait until counter() stays the same for `seconds` (at most `limit` seconds)."""
    end = time.monotonic() + limit
    last = counter()
    while time.monotonic() < end:
        await asyncio.sleep(seconds)
        if counter() == last:
            return
        last = counter()


MAX_LOGINS = 10
DRAIN_STALL = 30.0  # seconds without a new message: the drain is stuck


async def drain_with_sm(ctx: Ctx, limit: float, rate=None, rcvbuf=None) -> dict:
    """`drain_messages` offline messages drained by a XEP-0198 client that answers
    every <r/> it reads; with `rate`, it reads at most `rate` bytes/s through a socket
    receive buffer of `rcvbuf` bytes. A stream the server ends is followed by a fresh
    login, as a phone would (at most MAX_LOGINS logins). Timed from the first initial
    presence to the last of the messages to arrive; what has not arrived after `limit`
    seconds, or DRAIN_STALL seconds after the last new one, counts as lost (and
    `gave_up` says so)."""
    n = ctx.sizes.drain_messages
    store_elapsed, _ = await store_offline(ctx, n)
    arrivals = Arrivals("o", n)
    logins, ends, gave_up, read = 0, [], False, 0
    t0 = usage = None
    deadline = time.monotonic() + limit
    while not arrivals.complete.is_set() and logins < MAX_LOGINS and not gave_up:
        async with asyncio.timeout(ctx.target.timeout):
            conn = await login(ctx.target, *OFFLINE_RECEIVER, resource="drain", sm=True, rcvbuf=rcvbuf)
        logins += 1
        sm = xmpp.StreamManagement(conn, arrivals.stanza)
        try:
            conn.throttle(rate)
            if t0 is None:
                t0, usage = time.perf_counter(), Usage(ctx.server)
            conn.write(b"<presence/>")
            since, progress = time.monotonic(), arrivals.total()
            while not arrivals.complete.is_set() and not conn.closed and sm.ended is None:
                if arrivals.total() != progress:
                    since, progress = time.monotonic(), arrivals.total()
                if time.monotonic() > min(deadline, since + DRAIN_STALL):
                    gave_up = True
                    break
                await asyncio.sleep(0.05)
            if arrivals.complete.is_set():
                # copies that come after the last new message count as duplicates
                await quiet(arrivals.total, 1.0 if rate is None else 3.0, 15.0)
            elif not gave_up:
                ends.append(sm.ended or "connection closed")
                await asyncio.sleep(0.5)
        finally:
            sm.close()
            read += conn.bytes_read
    out = {
        "messages": n,
        "store_msgs_per_s": round(n / store_elapsed, 1),
        **arrivals.figures(),
        "logins": logins,
        "bytes_read": read,
        "drain_server_cpu_ms": round(usage.server_seconds() * 1000, 1),
    }
    if arrivals.last is not None and not out["lost"]:
        out["drain_ms"] = round((arrivals.last - t0) * 1000, 1)
        out["drain_msgs_per_s"] = round(n / (arrivals.last - t0), 1)
    if gave_up:
        out["gave_up"] = 1
    if ends:
        out["first_stream_end"] = ends[0]
    return out


async def run_sm_drain(ctx: Ctx) -> dict:
    return await drain_with_sm(ctx, ctx.sizes.scenario_timeout * 0.6)


async def run_slow_drain(ctx: Ctx) -> dict:
    s = ctx.sizes
    out = await drain_with_sm(ctx, s.slow_timeout * 0.8, rate=s.slow_bytes_per_s, rcvbuf=s.slow_rcvbuf)
    out["read_target_per_s"] = s.slow_bytes_per_s
    return out


# ---------------------------------------------------------------- stalled_memory


async def run_stalled_memory(ctx: Ctx) -> dict:
    """Server RSS with `stall_sessions` idle XEP-0198 sessions, then with one of them
    no longer reading nor acking while `stall_messages` messages are sent to it."""
    s = ctx.sizes
    n, m = s.stall_sessions, s.stall_messages
    await asyncio.sleep(s.idle_settle)
    baseline = ctx.server.rss_kib()
    conns = await open_sessions(ctx, [pool_user(i) for i in range(n)], presence=False, sm=True, rcvbuf=s.slow_rcvbuf)
    sms = [xmpp.StreamManagement(c) for c in conns]
    for c in conns:
        c.write(b"<presence/>")

    async def processed(sm):
        async with asyncio.timeout(ctx.target.timeout):
            await sm.ping(ctx.domain)  # the server has processed the presence

    await bounded(sms, processed, s.open_concurrency, retries=0)
    victim, other = conns[0], conns[1]
    arrivals = Arrivals("s", m)
    sms[0].on_stanza = arrivals.stanza
    sender = None
    try:
        async with asyncio.timeout(ctx.target.timeout):
            sender = await login(ctx.target, *pool_user(n), resource="send")
        # The same traffic to a session that reads first: what routing itself leaves
        # (buffers, caches, allocator arenas) is in the idle figure, not in the stalled one.
        warm = {"n": 0}
        sms[1].on_stanza = lambda st: warm.__setitem__("n", warm["n"] + st.startswith(b"<message"))
        async with asyncio.timeout(ctx.target.timeout * 2):
            if await send_messages(ctx, sender, ctx.bare(other.user), m, "w"):
                raise xmpp.XMPPError("messages to a reading session refused")
        await wait_until(lambda: warm["n"] >= m, ctx.target.timeout)
        await asyncio.sleep(s.idle_settle)
        idle = ctx.server.rss_kib()
        victim.transport.pause_reading()  # reads nothing, so acks nothing
        t0 = time.monotonic()
        async with asyncio.timeout(ctx.target.timeout * 2):
            refused = await send_messages(ctx, sender, ctx.bare(victim.user), m, "s")
        send_s = time.monotonic() - t0
        await asyncio.sleep(s.idle_settle)
        stalled = ctx.server.rss_kib()
        out = {
            "sessions": n,
            "messages": m,
            "per_idle_session_kib": round((idle - baseline) / n, 1),
            "idle_rss_mib": round(idle / 1024, 1),
            "stalled_above_idle_kib": stalled - idle,
            "send_ms": round(send_s * 1000, 1),
            "refused": refused,
        }
        # Then it reads again: what reaches it, over this connection.
        victim.transport.resume_reading()
        await quiet(arrivals.total, 3.0, 60.0)
        after = arrivals.figures()
        out.update(
            {
                "after_received": after["received"],
                "after_missing": after["lost"],
                "after_duplicated": after["duplicated"],
            }
        )
        out["stream_ended"] = int(victim.closed or sms[0].ended is not None)
        if sms[0].ended:
            out["stream_end"] = sms[0].ended
        return out
    finally:
        if sender is not None:
            sender.close()
        for sm in sms:
            sm.close()


# ---------------------------------------------------------------- roster_login


def count_both(roster: bytes) -> int:
    return roster.count(b"subscription='both'") + roster.count(b'subscription="both"')


def roster_subscriptions(roster: bytes) -> dict:
    """bare JID -> subscription, from a roster result."""
    out = {}
    i = roster.find(b"<item")
    while i >= 0:
        j = roster.find(b">", i)
        tag = roster[i : j + 1]
        jid = attr(tag, "jid")
        if jid:
            out[jid] = attr(tag, "subscription") or "none"
        i = roster.find(b"<item", j)
    return out


async def setup_roster(ctx: Ctx, markers: Markers):
    """Build `roster_contacts` mutual (both) subscriptions for the roster owner, once.

    In batches: the owner and each contact of the batch ask each other (subscribe);
    both sides answer every request (subscribed); the owner's roster tells when the
    batch is done."""
    n = ctx.sizes.roster_contacts
    key = f"roster_{n}"
    owner, contacts = roster_users(n)
    await ensure_accounts(ctx, [owner] + contacts, f"roster_{n}_accounts", markers)
    await warm_scram(ctx, [owner] + contacts)
    if markers.get(key):
        return
    ctx.log(f"  building {n} mutual subscriptions")
    t_start = time.monotonic()
    owner_jid = ctx.bare(owner[0])
    cconns = await open_sessions(ctx, contacts)
    by_jid = {ctx.bare(u): c for (u, _), c in zip(contacts, cconns)}
    oconn = None
    try:
        async with asyncio.timeout(ctx.target.timeout):
            oconn = await login(ctx.target, *owner, presence=True)

        def answerer(conn):
            def on_stanza(st):
                if st.startswith(b"<presence") and attr(st, "type") == "subscribe":
                    frm = (attr(st, "from") or "").split("/")[0]
                    conn.write(f"<presence to='{frm}' type='subscribed'/>".encode())
                elif st.startswith(b"<iq"):
                    f = replies.pop(attr(st, "id"), None)
                    if f is not None and not f.done():
                        f.set_result(st)

            return on_stanza

        replies = {}
        for c in cconns:
            c.set_stanza_handler(answerer(c))
        oconn.set_stanza_handler(answerer(oconn))

        async def roster():
            iq_id = xmpp.new_id("roster")
            f = replies[iq_id] = asyncio.get_running_loop().create_future()
            oconn.write(f"<iq type='get' id='{iq_id}'><query xmlns='{xmpp.NS_ROSTER}'/></iq>".encode())
            async with asyncio.timeout(120):
                return roster_subscriptions(await f)

        subs = await roster()
        todo = [j for j in by_jid if subs.get(j) != "both"]
        batch = 25
        for i in range(0, len(todo), batch):
            part = todo[i : i + batch]
            for _ in range(3):
                for j in part:
                    oconn.write(f"<presence to='{j}' type='subscribe'/>".encode())
                    by_jid[j].write(f"<presence to='{owner_jid}' type='subscribe'/>".encode())
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    subs = await roster()
                    part = [j for j in part if subs.get(j) != "both"]
                    if not part:
                        break
                if not part:
                    break
            if part:
                raise xmpp.XMPPError(
                    f"roster setup: {len(part)} contacts not 'both', e.g. {part[0]}: {subs.get(part[0])}"
                )
        subs = await roster()
        have = sum(1 for j in by_jid if subs.get(j) == "both")
        if have < n:
            raise xmpp.XMPPError(f"roster setup: only {have} of {n} contacts reached 'both'")
    finally:
        close_all(cconns)
        if oconn is not None:
            oconn.close()
    ctx.log(f"  roster built in {time.monotonic() - t_start:.1f}s")
    markers.set(key, True)


async def run_roster_login(ctx: Ctx) -> dict:
    s = ctx.sizes
    n = s.roster_contacts
    owner, contacts = roster_users(n)
    prefix = ",".join(sorted({u[: len(f"r{n}c")] for u, _ in contacts}))
    cconns = await open_sessions(ctx, contacts)
    for c in cconns:
        c.set_data_handler(discard)
    samples = {"login_ms": [], "roster_ms": [], "presences_ms": [], "server_cpu_ms": []}
    try:
        for rep in range(s.roster_reps):
            await asyncio.sleep(0.5)
            roster_at, seen, roster_items = [None], set(), [0]
            done = asyncio.get_running_loop().create_future()
            iq_id = xmpp.new_id("roster")

            def check():
                if roster_at[0] is not None and len(seen) >= n and not done.done():
                    done.set_result(time.perf_counter())

            def on_stanza(st):
                if st.startswith(b"<presence"):
                    if attr(st, "type") is None:
                        frm = attr(st, "from") or ""
                        if frm.startswith(prefix):
                            seen.add(frm.split("/")[0])
                            check()
                elif st.startswith(b"<iq") and attr(st, "id") == iq_id:
                    roster_at[0] = time.perf_counter()
                    roster_items[0] = count_both(st)
                    check()

            t0 = time.perf_counter()
            usage = Usage(ctx.server)
            async with asyncio.timeout(ctx.target.timeout):
                conn = await login(ctx.target, *owner, resource=f"rl{rep}")
            t_login = time.perf_counter()
            try:
                conn.set_stanza_handler(on_stanza)
                conn.write(f"<iq type='get' id='{iq_id}'><query xmlns='{xmpp.NS_ROSTER}'/></iq><presence/>".encode())
                try:
                    async with asyncio.timeout(ctx.target.timeout):
                        t_end = await done
                    samples["server_cpu_ms"].append(usage.server_seconds() * 1000)
                except TimeoutError:
                    raise xmpp.XMPPError(
                        f"roster {'received' if roster_at[0] else 'missing'}, {len(seen)} of {n} presences"
                    ) from None
            finally:
                conn.close()
            if roster_items[0] != n:
                raise xmpp.XMPPError(f"roster has {roster_items[0]} 'both' items, expected {n}")
            samples["login_ms"].append((t_login - t0) * 1000)
            samples["roster_ms"].append((roster_at[0] - t0) * 1000)
            samples["presences_ms"].append((t_end - t0) * 1000)
    finally:
        close_all(cconns)
    out = {"contacts": n}
    for k, v in samples.items():
        out[k] = round(percentile(v, 50), 1)
    return out


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class Scenario:
    name: str
    run: object  # async (ctx) -> dict
    pool: object  # (sizes) -> accounts needed from the shared pool
    setup: object = None  # async (ctx, markers) -> None, extra one-off set-up
    description: str = ""
    runs: int = 3  # runs per server unless --runs says otherwise
    timeout: object = None  # (sizes) -> seconds a run may take; None: scenario_timeout
    smacks: bool = False  # the servers load stream management (XEP-0198)


SCENARIOS = {
    s.name: s
    for s in [
        Scenario(
            "login", run_login, lambda z: z.login_pool, None, "SCRAM-SHA-1 logins/s, 50 concurrent, plain and STARTTLS"
        ),
        Scenario(
            "idle_memory",
            run_idle_memory,
            lambda z: max(z.idle_steps),
            None,
            "server RSS per idle authenticated session",
        ),
        Scenario(
            "one_to_one",
            run_one_to_one,
            lambda z: 2 * z.pairs,
            None,
            "chat messages/s at saturation, latency at a fixed rate",
        ),
        Scenario("muc", run_muc, lambda z: z.muc_occupants, None, "groupchat deliveries/s and latency in one room"),
        Scenario(
            "offline_drain",
            run_offline_drain,
            lambda z: 0,
            setup_offline,
            "time to deliver a queue of offline messages at login",
        ),
        Scenario(
            "sm_drain",
            run_sm_drain,
            lambda z: 0,
            setup_offline,
            "offline messages drained by a XEP-0198 client that acks",
            smacks=True,
        ),
        Scenario(
            "slow_drain",
            run_slow_drain,
            lambda z: 0,
            setup_offline,
            "offline messages drained by a XEP-0198 client reading 10 KB/s",
            runs=1,
            timeout=lambda z: z.slow_timeout,
            smacks=True,
        ),
        Scenario(
            "stalled_memory",
            run_stalled_memory,
            lambda z: z.stall_sessions + 1,
            None,
            "server RSS for a session that stops reading while messages come",
            smacks=True,
        ),
        Scenario(
            "roster_login", run_roster_login, lambda z: 0, setup_roster, "login with a large roster of online contacts"
        ),
    ]
}
