"""The storage contract: every backend in conftest.BACKENDS passes all of this.

The archive tests also check random queries against a small reference model of
XEP-0313 filters with XEP-0059 paging (`expected_page`), so a backend's edge cases
(empty pages, max=0, cursors outside the filter) agree with the model's.
"""

import asyncio
import random

import pytest

from xmppd.storage.interfaces import (
    Account,
    ArchivedStanza,
    ArchiveQuery,
    PubSubItem,
    RosterItem,
    StorageBackend,
    UnknownArchiveId,
    Upload,
)

ALICE = "alice@example.org"
BOB = "bob@example.org"
ROOM = "lounge@conference.example.org"


def test_kind_is_a_storage_backend(backend):
    assert isinstance(backend, StorageBackend)


# ---------------------------------------------------------------- accounts


def credentials(seed: int):
    from xmppd.protocol.sasl import ScramCredentials

    return ScramCredentials(**credential_fields(ScramCredentials, seed))


def credential_fields(cls, seed: int) -> dict:
    """Values for every field of ScramCredentials, derived from seed."""
    import dataclasses
    import typing

    values = {}
    for name, hint in typing.get_type_hints(cls).items():
        if name.startswith("_"):
            continue
        if hint is bytes:
            values[name] = bytes([seed, 0, 255, 10]) + name.encode()
        elif hint is int:
            values[name] = 4096 + seed
        elif hint is str:
            values[name] = f"{name}-{seed}"
    return {field.name: values[field.name] for field in dataclasses.fields(cls) if field.name in values}


def account(jid: str, seed: int = 1, created: float = 1_700_000_000.5) -> Account:
    return Account(jid=jid, secrets={"sha1": credentials(seed), "sha256": credentials(seed + 1)}, created=created)


async def test_account_create_get(backend):
    assert await backend.accounts.get(ALICE) is None
    assert await backend.accounts.create(account(ALICE)) is True
    assert await backend.accounts.get(ALICE) == account(ALICE)


async def test_account_create_twice_returns_false_and_keeps_the_first(backend):
    assert await backend.accounts.create(account(ALICE, seed=1)) is True
    assert await backend.accounts.create(account(ALICE, seed=7, created=5.0)) is False
    assert await backend.accounts.get(ALICE) == account(ALICE, seed=1)


async def test_account_set_secrets(backend):
    await backend.accounts.create(account(ALICE, seed=1))
    new = {"sha256": credentials(9)}
    assert await backend.accounts.set_secrets(ALICE, new) is True
    stored = await backend.accounts.get(ALICE)
    assert stored.secrets == new
    assert stored.created == account(ALICE).created
    assert await backend.accounts.set_secrets(BOB, new) is False
    assert await backend.accounts.get(BOB) is None


async def test_account_delete(backend):
    await backend.accounts.create(account(ALICE))
    assert await backend.accounts.delete(ALICE) is True
    assert await backend.accounts.get(ALICE) is None
    assert await backend.accounts.delete(ALICE) is False
    assert await backend.accounts.create(account(ALICE, seed=3)) is True


async def test_account_list_by_domain_sorted(backend):
    for jid in ["zoe@example.org", ALICE, "carol@example.net", BOB]:
        await backend.accounts.create(account(jid))
    assert await backend.accounts.list("example.org") == [ALICE, BOB, "zoe@example.org"]
    assert await backend.accounts.list("example.net") == ["carol@example.net"]
    assert await backend.accounts.list("example.com") == []


# ---------------------------------------------------------------- rosters


async def test_roster_empty(backend):
    assert await backend.rosters.get(ALICE) == (0, {})
    assert await backend.rosters.get_item(ALICE, BOB) is None


async def test_roster_version_increments_on_every_change(backend):
    bob = RosterItem(jid=BOB, name="Bob", subscription="both", groups=("Friends", "Work"))
    carol = RosterItem(jid="carol@example.net", ask=True, pending_in=True, approved=True)
    assert await backend.rosters.put_item(ALICE, bob) == 1
    assert await backend.rosters.put_item(ALICE, carol) == 2
    assert await backend.rosters.get(ALICE) == (2, {BOB: bob, carol.jid: carol})
    assert await backend.rosters.get_item(ALICE, BOB) == bob

    renamed = RosterItem(jid=BOB, name=None, subscription="to")
    assert await backend.rosters.put_item(ALICE, renamed) == 3
    assert await backend.rosters.get_item(ALICE, BOB) == renamed

    assert await backend.rosters.remove_item(ALICE, BOB) == 4
    assert await backend.rosters.get(ALICE) == (4, {carol.jid: carol})


async def test_roster_remove_absent_item_changes_nothing(backend):
    await backend.rosters.put_item(ALICE, RosterItem(jid=BOB))
    assert await backend.rosters.remove_item(ALICE, "nobody@example.org") == 1
    assert await backend.rosters.remove_item(BOB, ALICE) == 0
    assert (await backend.rosters.get(ALICE))[0] == 1


async def test_roster_versions_are_per_owner(backend):
    await backend.rosters.put_item(ALICE, RosterItem(jid=BOB))
    await backend.rosters.put_item(ALICE, RosterItem(jid="carol@example.net"))
    assert await backend.rosters.put_item(BOB, RosterItem(jid=ALICE)) == 1
    assert await backend.rosters.get(BOB) == (1, {ALICE: RosterItem(jid=ALICE)})


async def test_roster_delete(backend):
    await backend.rosters.put_item(ALICE, RosterItem(jid=BOB))
    await backend.rosters.put_item(BOB, RosterItem(jid=ALICE))
    await backend.rosters.delete(ALICE)
    assert await backend.rosters.get(ALICE) == (0, {})
    assert await backend.rosters.get_item(ALICE, BOB) is None
    assert await backend.rosters.get(BOB) == (1, {ALICE: RosterItem(jid=ALICE)})


async def test_roster_replace_sets_items_and_version(backend):
    bob, carol = RosterItem(jid=BOB, subscription="both", groups=("A",)), RosterItem(jid="carol@x.org")
    await backend.rosters.put_item(ALICE, RosterItem(jid="old@example.org"))
    await backend.rosters.put_item(ALICE, bob)
    await backend.rosters.replace(ALICE, 42, [bob, carol])
    assert await backend.rosters.get(ALICE) == (42, {BOB: bob, carol.jid: carol})
    await backend.rosters.replace(ALICE, 42, [bob, carol])  # a rerun: the same
    assert await backend.rosters.get(ALICE) == (42, {BOB: bob, carol.jid: carol})
    assert await backend.rosters.put_item(ALICE, RosterItem(jid="dave@x.org")) == 43
    await backend.rosters.replace(BOB, 7, [RosterItem(jid=ALICE)])  # a new roster
    assert await backend.rosters.get(BOB) == (7, {ALICE: RosterItem(jid=ALICE)})
    assert await backend.rosters.remove_item(BOB, ALICE) == 8
    await backend.rosters.replace(BOB, 0, [])
    assert await backend.rosters.get(BOB) == (0, {})


# ---------------------------------------------------------------- archives

T0 = 1_700_000_000.0
N = 50


def stanza(i: int, with_: str | None = None) -> ArchivedStanza:
    """Item i: ids and times increase with i; with_ alternates a, b (even i: a)."""
    return ArchivedStanza(
        id=f"id{i:04d}",
        when=T0 + i,
        with_=with_ or ("a@example.org" if i % 2 == 0 else "b@example.org"),
        payload=f"<message id='m{i}'><body>héllo {i}</body></message>".encode(),
    )


def ids(page) -> list[int]:
    return [int(item.id[2:]) for item in page.items]


async def fill(store, owner=ALICE, n=N):
    """Append n items concurrently (they may commit in any order; the archive orders)."""
    items = [stanza(i) for i in range(n)]
    assert all(await asyncio.gather(*(store.append(owner, item) for item in items)))
    return items


async def test_archive_append_and_read_back(backend):
    store = backend.archive("archive")
    items = await fill(store)
    page = await store.query(ALICE, ArchiveQuery())
    assert page.items == items
    assert page.complete is True
    assert page.count == N
    assert await store.count(ALICE) == N


async def test_archive_items_in_order_of_time_and_id(backend):
    store = backend.archive("archive")
    for i in [3, 1, 4, 0, 2]:
        assert await store.append(ALICE, stanza(i))
    assert ids(await store.query(ALICE, ArchiveQuery())) == [0, 1, 2, 3, 4]


async def test_archive_append_is_idempotent(backend):
    store = backend.archive("archive")
    first = stanza(1)
    assert await store.append(ALICE, first) is True
    retry = ArchivedStanza(id=first.id, when=first.when + 5, with_="x@example.org", payload=b"<message/>")
    assert await store.append(ALICE, retry) is False
    assert (await store.query(ALICE, ArchiveQuery())).items == [first]
    assert await store.count(ALICE) == 1
    # The same id for another owner or in another archive is another item.
    assert await store.append(BOB, first) is True
    assert await backend.archive("offline").append(ALICE, first) is True


async def test_archive_append_many_is_one_append_each(backend):
    """Several owners' items in one write; each reported new once, duplicates (within
    the batch or stored before) not stored again."""
    store = backend.archive("archive")
    assert await store.append(ALICE, stanza(0))
    added = await store.append_many(
        [(ALICE, stanza(0)), (ALICE, stanza(1)), (BOB, stanza(1)), (ALICE, stanza(2)), (ALICE, stanza(1))]
    )
    assert added == [False, True, True, True, False]
    assert ids(await store.query(ALICE, ArchiveQuery())) == [0, 1, 2]
    assert ids(await store.query(BOB, ArchiveQuery())) == [1]
    assert await store.append_many([]) == []


async def test_archive_concurrent_retries_store_once(backend):
    store = backend.archive("archive")
    results = await asyncio.gather(*(store.append(ALICE, stanza(7)) for _ in range(20)))
    assert sorted(results) == [False] * 19 + [True]
    assert await store.count(ALICE) == 1


async def test_archive_payload_bytes_round_trip(backend):
    store = backend.archive("archive")
    payload = bytes(range(256)) + "<body>ünïcødé ✓</body>".encode()
    item = ArchivedStanza(id="x", when=T0 + 0.123456, with_="a@example.org/res", payload=payload)
    await store.append(ALICE, item)
    [stored] = (await store.query(ALICE, ArchiveQuery())).items
    assert stored == item
    assert isinstance(stored.payload, bytes)


async def test_archives_are_isolated_by_name_and_owner(backend):
    await fill(backend.archive("archive"), ALICE, 5)
    await fill(backend.archive("offline"), ALICE, 3)
    await fill(backend.archive("archive"), BOB, 2)
    assert await backend.archive("archive").count(ALICE) == 5
    assert await backend.archive("offline").count(ALICE) == 3
    assert await backend.archive("archive").count(BOB) == 2
    assert await backend.archive("muc").count(ALICE) == 0
    assert (await backend.archive("muc").query(ALICE, ArchiveQuery())).items == []
    assert (await backend.archive("offline").query(ALICE, ArchiveQuery())).count == 3


async def test_archive_paging_forward(backend):
    store = backend.archive("archive")
    await fill(store)
    seen, after, pages = [], None, 0
    while True:
        page = await store.query(ALICE, ArchiveQuery(after=after, max=10))
        pages += 1
        assert page.count == N
        assert len(page.items) == 10
        seen += ids(page)
        after = page.items[-1].id
        if page.complete:
            break
        assert pages < 10
    assert pages == 5
    assert seen == list(range(N))
    # After the last item: an empty, complete page.
    page = await store.query(ALICE, ArchiveQuery(after=after, max=10))
    assert (page.items, page.complete, page.count) == ([], True, N)


async def test_archive_paging_forward_uneven_pages(backend):
    store = backend.archive("archive")
    await fill(store)
    first = await store.query(ALICE, ArchiveQuery(max=7))
    assert ids(first) == list(range(7)) and first.complete is False
    seen, after = ids(first), first.items[-1].id
    while True:
        page = await store.query(ALICE, ArchiveQuery(after=after, max=7))
        seen += ids(page)
        if page.complete:
            break
        after = page.items[-1].id
    assert seen == list(range(N))
    assert ids(page) == [49]


async def test_archive_paging_backward(backend):
    store = backend.archive("archive")
    await fill(store)
    last = await store.query(ALICE, ArchiveQuery(before="", max=10))
    assert ids(last) == list(range(40, 50))
    assert last.complete is False and last.count == N
    pages, before = [ids(last)], last.items[0].id
    while True:
        page = await store.query(ALICE, ArchiveQuery(before=before, max=10))
        assert page.count == N
        pages.insert(0, ids(page))
        if page.complete:
            break
        before = page.items[0].id
        assert len(pages) < 10
    assert len(pages) == 5
    assert pages[0] == list(range(10))
    assert sum(pages, []) == list(range(N))
    # Before the first item: an empty, complete page.
    page = await store.query(ALICE, ArchiveQuery(before="id0000", max=10))
    assert (page.items, page.complete) == ([], True)


async def test_archive_paging_backward_uneven_pages(backend):
    store = backend.archive("archive")
    await fill(store)
    page = await store.query(ALICE, ArchiveQuery(before="", max=7))
    seen = ids(page)
    while not page.complete:
        page = await store.query(ALICE, ArchiveQuery(before=page.items[0].id, max=7))
        seen = ids(page) + seen
    assert seen == list(range(N))
    assert ids(page) == [0]


async def test_archive_page_size_equal_to_total_is_complete(backend):
    store = backend.archive("archive")
    await fill(store)
    forward = await store.query(ALICE, ArchiveQuery(max=N))
    backward = await store.query(ALICE, ArchiveQuery(before="", max=N))
    assert ids(forward) == ids(backward) == list(range(N))
    assert forward.complete is backward.complete is True
    assert (await store.query(ALICE, ArchiveQuery(max=N - 1))).complete is False
    assert (await store.query(ALICE, ArchiveQuery(before="", max=N - 1))).complete is False


async def test_archive_before_empty_without_max_is_everything(backend):
    store = backend.archive("archive")
    await fill(store, n=5)
    page = await store.query(ALICE, ArchiveQuery(before=""))
    assert ids(page) == [0, 1, 2, 3, 4] and page.complete is True


async def test_archive_max_zero_gives_only_the_count(backend):
    store = backend.archive("archive")
    await fill(store)
    page = await store.query(ALICE, ArchiveQuery(max=0))
    assert (page.items, page.count, page.complete) == ([], N, False)
    page = await store.query(ALICE, ArchiveQuery(max=0, with_="a@example.org"))
    assert (page.items, page.count) == ([], N // 2)
    page = await store.query(ALICE, ArchiveQuery(max=0, with_="nobody@example.org"))
    assert (page.items, page.count, page.complete) == ([], 0, True)


async def test_archive_empty(backend):
    store = backend.archive("archive")
    for query in [ArchiveQuery(), ArchiveQuery(max=10), ArchiveQuery(before="", max=10)]:
        page = await store.query(ALICE, query)
        assert (page.items, page.complete, page.count) == ([], True, 0)
    assert await store.count(ALICE) == 0


async def test_archive_filter_with(backend):
    store = backend.archive("archive")
    await fill(store)
    page = await store.query(ALICE, ArchiveQuery(with_="b@example.org"))
    assert ids(page) == list(range(1, N, 2))
    assert page.count == N // 2
    page = await store.query(ALICE, ArchiveQuery(with_="a@example.org/resource"))
    assert page.items == [] and page.count == 0


async def test_archive_filter_start_end_inclusive(backend):
    store = backend.archive("archive")
    await fill(store)
    page = await store.query(ALICE, ArchiveQuery(start=T0 + 10, end=T0 + 19))
    assert ids(page) == list(range(10, 20)) and page.count == 10
    assert ids(await store.query(ALICE, ArchiveQuery(start=T0 + 45))) == list(range(45, 50))
    assert ids(await store.query(ALICE, ArchiveQuery(end=T0 + 2))) == [0, 1, 2]
    assert ids(await store.query(ALICE, ArchiveQuery(start=T0 + 9.5, end=T0 + 10.5))) == [10]
    assert ids(await store.query(ALICE, ArchiveQuery(start=T0 + 20, end=T0 + 10))) == []


async def test_archive_filter_after_id_before_id_exclusive(backend):
    store = backend.archive("archive")
    await fill(store)
    page = await store.query(ALICE, ArchiveQuery(after_id="id0010", before_id="id0020"))
    assert ids(page) == list(range(11, 20)) and page.count == 9
    assert ids(await store.query(ALICE, ArchiveQuery(after_id="id0047"))) == [48, 49]
    assert ids(await store.query(ALICE, ArchiveQuery(before_id="id0002"))) == [0, 1]
    assert ids(await store.query(ALICE, ArchiveQuery(after_id="id0005", before_id="id0006"))) == []


async def test_archive_filter_ids(backend):
    store = backend.archive("archive")
    await fill(store)
    query = ArchiveQuery(ids=("id0030", "id0005", "unknown", "id0017"))
    page = await store.query(ALICE, query)
    assert ids(page) == [5, 17, 30]  # archive order, not request order
    assert page.count == 3 and page.complete is True
    assert (await store.query(ALICE, ArchiveQuery(ids=()))).items == []
    page = await store.query(ALICE, ArchiveQuery(ids=("id0030", "id0005", "id0017"), max=2))
    assert ids(page) == [5, 17] and page.complete is False and page.count == 3


async def test_archive_filters_combine_with_paging(backend):
    store = backend.archive("archive")
    await fill(store)
    base = dict(with_="a@example.org", start=T0 + 10, end=T0 + 40)  # even 10..40: 16 items
    page = await store.query(ALICE, ArchiveQuery(**base, max=5))
    assert ids(page) == [10, 12, 14, 16, 18] and page.count == 16 and not page.complete
    # A cursor outside the filter is fine: it is a position in the archive.
    page = await store.query(ALICE, ArchiveQuery(**base, after="id0019", max=5))
    assert ids(page) == [20, 22, 24, 26, 28] and page.count == 16
    page = await store.query(ALICE, ArchiveQuery(**base, before="", max=5))
    assert ids(page) == [32, 34, 36, 38, 40] and not page.complete
    page = await store.query(ALICE, ArchiveQuery(**base, before="id0013", max=5))
    assert ids(page) == [10, 12] and page.complete is True
    page = await store.query(ALICE, ArchiveQuery(**base, after="id0036", max=5))
    assert ids(page) == [38, 40] and page.complete is True


async def test_archive_unknown_ids_raise(backend):
    store = backend.archive("archive")
    await fill(store, n=5)
    await backend.archive("offline").append(ALICE, stanza(99))
    await store.append(BOB, stanza(98))
    for unknown in ["nope", "id0099", "id0098"]:  # absent, other archive, other owner
        for query in [
            ArchiveQuery(after=unknown),
            ArchiveQuery(before=unknown),
            ArchiveQuery(after_id=unknown),
            ArchiveQuery(before_id=unknown),
            ArchiveQuery(after=unknown, max=0),
        ]:
            with pytest.raises(UnknownArchiveId):
                await store.query(ALICE, query)
    with pytest.raises(LookupError):  # UnknownArchiveId is a LookupError
        await store.query(BOB, ArchiveQuery(after="id0001"))


async def test_archive_known_id_of_a_filtered_out_item_is_no_error(backend):
    store = backend.archive("archive")
    await fill(store, n=10)
    page = await store.query(ALICE, ArchiveQuery(with_="a@example.org", after_id="id0003"))
    assert ids(page) == [4, 6, 8]


async def test_archive_delete_ids(backend):
    store = backend.archive("archive")
    await fill(store, n=10)
    await fill(store, owner=BOB, n=10)
    assert await store.delete(ALICE, ["id0001", "id0003", "nope"]) == 2
    assert ids(await store.query(ALICE, ArchiveQuery())) == [0, 2, 4, 5, 6, 7, 8, 9]
    assert await store.delete(ALICE, ["id0001"]) == 0
    assert await store.delete(ALICE, []) == 0
    assert await store.count(ALICE) == 8
    assert await store.count(BOB) == 10
    with pytest.raises(UnknownArchiveId):
        await store.query(ALICE, ArchiveQuery(after="id0001"))


async def test_archive_delete_all_of_owner(backend):
    store = backend.archive("archive")
    await fill(store, n=10)
    await fill(store, owner=BOB, n=4)
    await fill(backend.archive("offline"), n=3)
    assert await store.delete(ALICE) == 10
    assert await store.count(ALICE) == 0
    assert await store.count(BOB) == 4
    assert await backend.archive("offline").count(ALICE) == 3
    assert await store.delete(ALICE) == 0
    assert await store.append(ALICE, stanza(1)) is True


async def test_archive_delete_older_than(backend):
    store = backend.archive("archive")
    await fill(store, n=10)
    await fill(store, owner=BOB, n=10)
    await fill(backend.archive("muc"), owner=ROOM, n=10)
    assert await store.delete_older_than(T0 + 4) == 8  # 0..3 of both owners
    assert ids(await store.query(ALICE, ArchiveQuery())) == list(range(4, 10))
    assert ids(await store.query(BOB, ArchiveQuery())) == list(range(4, 10))
    assert await backend.archive("muc").count(ROOM) == 10
    assert await store.delete_older_than(T0 + 4) == 0
    assert await store.delete_older_than(T0 + 100) == 12


async def test_archive_owners(backend):
    store = backend.archive("archive")
    assert [owner async for owner in store.owners()] == []
    await fill(store, owner=ALICE, n=2)
    await fill(store, owner=BOB, n=3)
    await fill(backend.archive("muc"), owner=ROOM, n=1)
    assert sorted([owner async for owner in store.owners()]) == [ALICE, BOB]
    assert [owner async for owner in backend.archive("muc").owners()] == [ROOM]
    await store.delete(ALICE)
    assert [owner async for owner in store.owners()] == [BOB]


def expected_page(items, query):
    """The reference model: (ids, complete, count) of a query over items in order."""
    position = {item.id: index for index, item in enumerate(items)}
    for ref in (query.after, query.before or None, query.after_id, query.before_id):
        if ref is not None and ref not in position:
            raise UnknownArchiveId(ref)

    def matches(index, item):
        return (
            (query.with_ is None or item.with_ == query.with_)
            and (query.start is None or item.when >= query.start)
            and (query.end is None or item.when <= query.end)
            and (query.after_id is None or index > position[query.after_id])
            and (query.before_id is None or index < position[query.before_id])
            and (query.ids is None or item.id in query.ids)
        )

    selected = [index for index, item in enumerate(items) if matches(index, item)]
    count = len(selected)
    if query.after is not None:
        selected = [index for index in selected if index > position[query.after]]
    if query.before:
        selected = [index for index in selected if index < position[query.before]]
    limit = len(selected) if query.max is None else query.max
    complete = len(selected) <= limit
    if query.before is not None:
        page = selected[max(0, len(selected) - limit) :] if limit else []
    else:
        page = selected[:limit]
    return [int(items[index].id[2:]) for index in page], complete, count


def random_query(rng: random.Random) -> ArchiveQuery:
    def some_id():
        return f"id{rng.randrange(-2, N + 2):04d}" if rng.random() < 0.97 else "nope"

    def maybe(value, p=0.3):
        return value if rng.random() < p else None

    return ArchiveQuery(
        with_=maybe(rng.choice(["a@example.org", "b@example.org", "c@example.org"])),
        start=maybe(T0 + rng.uniform(-5, N + 5)),
        end=maybe(T0 + rng.uniform(-5, N + 5)),
        after_id=maybe(some_id(), 0.2),
        before_id=maybe(some_id(), 0.2),
        ids=maybe(tuple(some_id() for _ in range(rng.randrange(0, 8))), 0.15),
        after=maybe(some_id()),
        before=maybe(rng.choice(["", some_id()]), 0.4),
        max=maybe(rng.randrange(0, 12), 0.8),
    )


async def test_archive_queries_agree_with_the_reference_model(backend):
    store = backend.archive("archive")
    items = await fill(store)
    rng = random.Random(20261122)
    for _ in range(400):
        query = random_query(rng)
        try:
            expected = expected_page(items, query)
        except UnknownArchiveId:
            with pytest.raises(UnknownArchiveId):
                await store.query(ALICE, query)
            continue
        page = await store.query(ALICE, query)
        assert (ids(page), page.complete, page.count) == expected, query


async def test_archive_query_without_count_pages_the_same(backend):
    store = backend.archive("archive")
    await fill(store, n=10)
    page = await store.query(ALICE, ArchiveQuery(max=4, count=False))
    assert ids(page) == [0, 1, 2, 3] and page.complete is False and page.count in (None, 10)
    page = await store.query(ALICE, ArchiveQuery(max=4, after=page.items[-1].id, count=False))
    assert ids(page) == [4, 5, 6, 7] and page.complete is False and page.count in (None, 10)
    page = await store.query(ALICE, ArchiveQuery(max=4, after=page.items[-1].id, count=False))
    assert ids(page) == [8, 9] and page.complete is True


async def test_archive_names(backend):
    assert await backend.archive_names() == []
    await fill(backend.archive("offline"), n=1)
    await fill(backend.archive("archive"), owner=BOB, n=2)
    await fill(backend.archive("muc"), owner=ROOM, n=1)
    await backend.keyvalue("vcard").set(ALICE, "k", b"v")
    assert await backend.archive_names() == ["archive", "muc", "offline"]
    await backend.archive("offline").delete(ALICE)
    assert await backend.archive_names() == ["archive", "muc"]


# ---------------------------------------------------------------- key-value


async def test_keyvalue_get_set_overwrite(backend):
    store = backend.keyvalue("private")
    assert await store.get(ALICE, "storage:bookmarks") is None
    await store.set(ALICE, "storage:bookmarks", b"<storage/>")
    assert await store.get(ALICE, "storage:bookmarks") == b"<storage/>"
    await store.set(ALICE, "storage:bookmarks", b"\x00\xff<storage>x</storage>")
    assert await store.get(ALICE, "storage:bookmarks") == b"\x00\xff<storage>x</storage>"
    assert await store.get(BOB, "storage:bookmarks") is None


async def test_keyvalue_keys_and_delete(backend):
    store = backend.keyvalue("private")
    for key in ["b", "a", "c"]:
        await store.set(ALICE, key, key.encode())
    await store.set(BOB, "a", b"bob")
    assert await store.keys(ALICE) == ["a", "b", "c"]
    await store.delete(ALICE, "b")
    await store.delete(ALICE, "absent")
    assert await store.keys(ALICE) == ["a", "c"]
    await store.delete(ALICE)
    assert await store.keys(ALICE) == []
    assert await store.get(ALICE, "a") is None
    assert await store.get(BOB, "a") == b"bob"


async def test_keyvalue_stores_are_isolated_by_name(backend):
    await backend.keyvalue("private").set(ALICE, "k", b"private")
    await backend.keyvalue("vcard").set(ALICE, "k", b"vcard")
    assert await backend.keyvalue("private").get(ALICE, "k") == b"private"
    assert await backend.keyvalue("vcard").get(ALICE, "k") == b"vcard"
    await backend.keyvalue("vcard").delete(ALICE)
    assert await backend.keyvalue("private").get(ALICE, "k") == b"private"
    assert await backend.keyvalue("roster-pending").keys(ALICE) == []


async def test_keyvalue_owners(backend):
    store = backend.keyvalue("vcard")
    assert [owner async for owner in store.owners()] == []
    await store.set(ALICE, "vcard", b"1")
    await store.set(ALICE, "photo", b"2")
    await store.set(BOB, "vcard", b"3")
    await backend.keyvalue("private").set(ROOM, "x", b"4")
    assert sorted([owner async for owner in store.owners()]) == [ALICE, BOB]
    await store.delete(ALICE)
    assert [owner async for owner in store.owners()] == [BOB]


async def test_keyvalue_names(backend):
    assert await backend.keyvalue_names() == []
    await backend.keyvalue("vcard").set(ALICE, "vcard", b"1")
    await backend.keyvalue("private").set(BOB, "x", b"2")
    await backend.keyvalue("private").set(ALICE, "y", b"3")
    await fill(backend.archive("offline"), n=1)
    assert await backend.keyvalue_names() == ["private", "vcard"]
    await backend.keyvalue("vcard").delete(ALICE, "vcard")
    assert await backend.keyvalue_names() == ["private"]


# ---------------------------------------------------------------- rooms


async def test_rooms(backend):
    state = {
        "config": {"persistent": True, "name": "Lounge ☕", "max_users": 50},
        "affiliations": {ALICE: "owner", BOB: "member"},
        "subject": None,
        "bans": [],
    }
    assert await backend.rooms.get(ROOM) is None
    await backend.rooms.save(ROOM, state)
    assert await backend.rooms.get(ROOM) == state
    await backend.rooms.save(ROOM, {"config": {}})
    assert await backend.rooms.get(ROOM) == {"config": {}}
    await backend.rooms.delete(ROOM)
    assert await backend.rooms.get(ROOM) is None
    await backend.rooms.delete(ROOM)


async def test_rooms_list_by_service_sorted(backend):
    for room in ["zoo@conference.example.org", ROOM, "attic@conference.example.org", "other@muc.example.net"]:
        await backend.rooms.save(room, {})
    assert await backend.rooms.list("conference.example.org") == [
        "attic@conference.example.org",
        ROOM,
        "zoo@conference.example.org",
    ]
    assert await backend.rooms.list("muc.example.net") == ["other@muc.example.net"]
    assert await backend.rooms.list("example.org") == []


async def test_rooms_services(backend):
    assert [service async for service in backend.rooms.services()] == []
    for room in ["zoo@conference.example.org", ROOM, "other@muc.example.net"]:
        await backend.rooms.save(room, {})
    assert [service async for service in backend.rooms.services()] == ["conference.example.org", "muc.example.net"]
    await backend.rooms.delete("other@muc.example.net")
    assert [service async for service in backend.rooms.services()] == ["conference.example.org"]


# ---------------------------------------------------------------- pubsub


def pubsub_item(item_id: str, n: int = 0) -> PubSubItem:
    return PubSubItem(id=item_id, payload=f"<entry xmlns='urn:x'>{n}</entry>".encode(), publisher=ALICE, when=T0 + n)


NODE = "urn:xmpp:avatar:metadata"


async def test_pubsub_nodes(backend):
    assert await backend.pubsub.get_node(ALICE, NODE) is None
    await backend.pubsub.set_node(ALICE, NODE, {"max_items": 1, "access_model": "presence"})
    await backend.pubsub.set_node(ALICE, "eu.siacs.conversations.axolotl.devicelist", {})
    await backend.pubsub.set_node(BOB, NODE, {})
    assert await backend.pubsub.get_node(ALICE, NODE) == {"max_items": 1, "access_model": "presence"}
    await backend.pubsub.set_node(ALICE, NODE, {"access_model": "open"})
    assert await backend.pubsub.get_node(ALICE, NODE) == {"access_model": "open"}
    assert await backend.pubsub.list_nodes(ALICE) == ["eu.siacs.conversations.axolotl.devicelist", NODE]
    assert sorted([service async for service in backend.pubsub.services()]) == [ALICE, BOB]


async def test_pubsub_items_newest_first_and_trimmed(backend):
    await backend.pubsub.set_node(ALICE, NODE, {})
    for n in range(5):
        await backend.pubsub.publish(ALICE, NODE, pubsub_item(f"i{n}", n), max_items=None)
    assert [item.id for item in await backend.pubsub.get_items(ALICE, NODE)] == ["i4", "i3", "i2", "i1", "i0"]
    await backend.pubsub.publish(ALICE, NODE, pubsub_item("i5", 5), max_items=3)
    items = await backend.pubsub.get_items(ALICE, NODE)
    assert [item.id for item in items] == ["i5", "i4", "i3"]
    assert items[0] == pubsub_item("i5", 5)
    assert [item.id for item in await backend.pubsub.get_items(ALICE, NODE, max_items=2)] == ["i5", "i4"]
    await backend.pubsub.publish(ALICE, NODE, pubsub_item("i6", 6), max_items=1)
    assert await backend.pubsub.get_items(ALICE, NODE) == [pubsub_item("i6", 6)]


async def test_pubsub_publish_replaces_by_id(backend):
    await backend.pubsub.set_node(ALICE, NODE, {})
    for n in range(3):
        await backend.pubsub.publish(ALICE, NODE, pubsub_item(f"i{n}", n), max_items=3)
    await backend.pubsub.publish(ALICE, NODE, pubsub_item("i0", 10), max_items=3)
    items = await backend.pubsub.get_items(ALICE, NODE)
    assert [item.id for item in items] == ["i0", "i2", "i1"]  # republished is newest
    assert items[0] == pubsub_item("i0", 10)
    assert await backend.pubsub.get_items(ALICE, NODE, ids=["i1", "i0", "zz"]) == [
        pubsub_item("i0", 10),
        pubsub_item("i1", 1),
    ]
    assert await backend.pubsub.get_items(ALICE, NODE, ids=[]) == []


async def test_pubsub_retract_and_delete_node(backend):
    await backend.pubsub.set_node(ALICE, NODE, {})
    await backend.pubsub.set_node(ALICE, "other", {})
    for n in range(3):
        await backend.pubsub.publish(ALICE, NODE, pubsub_item(f"i{n}", n), max_items=None)
    await backend.pubsub.publish(ALICE, "other", pubsub_item("o", 0), max_items=None)
    assert await backend.pubsub.retract(ALICE, NODE, "i1") is True
    assert await backend.pubsub.retract(ALICE, NODE, "i1") is False
    assert [item.id for item in await backend.pubsub.get_items(ALICE, NODE)] == ["i2", "i0"]
    await backend.pubsub.delete_node(ALICE, NODE)
    assert await backend.pubsub.get_node(ALICE, NODE) is None
    assert await backend.pubsub.get_items(ALICE, NODE) == []
    assert await backend.pubsub.list_nodes(ALICE) == ["other"]
    assert await backend.pubsub.get_items(ALICE, "other") == [pubsub_item("o", 0)]
    # A node created again under the same name starts empty.
    await backend.pubsub.set_node(ALICE, NODE, {})
    assert await backend.pubsub.get_items(ALICE, NODE) == []


async def test_pubsub_services_are_isolated(backend):
    await backend.pubsub.set_node(ALICE, NODE, {"a": 1})
    await backend.pubsub.set_node(BOB, NODE, {"b": 2})
    await backend.pubsub.publish(ALICE, NODE, pubsub_item("x", 1), max_items=None)
    assert await backend.pubsub.get_items(BOB, NODE) == []
    assert await backend.pubsub.get_node(BOB, NODE) == {"b": 2}
    assert await backend.pubsub.retract(BOB, NODE, "x") is False


# ---------------------------------------------------------------- uploads


def upload(upload_id: str, owner: str = ALICE, created: float = T0, expires: float = T0 + 3600) -> Upload:
    return Upload(
        id=upload_id,
        owner=owner,
        filename="photo ✓.jpg",
        size=123_456,
        content_type="image/jpeg",
        created=created,
        expires=expires,
    )


async def test_upload_add_get_remove(backend):
    assert await backend.uploads.get("slot1") is None
    await backend.uploads.add(upload("slot1"))
    assert await backend.uploads.get("slot1") == upload("slot1")
    await backend.uploads.remove("slot1")
    assert await backend.uploads.get("slot1") is None
    await backend.uploads.remove("slot1")


async def test_upload_mark_completed_only_once(backend):
    await backend.uploads.add(upload("slot1"))
    assert await backend.uploads.mark_completed("slot1") is True
    assert (await backend.uploads.get("slot1")).completed is True
    assert await backend.uploads.mark_completed("slot1") is False
    assert await backend.uploads.mark_completed("no-such-slot") is False


async def test_upload_mark_completed_races_have_one_winner(backend):
    await backend.uploads.add(upload("slot1"))
    results = await asyncio.gather(*(backend.uploads.mark_completed("slot1") for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]


async def test_upload_usage_counts_files_and_open_slots(backend):
    await backend.uploads.add(upload("stored", created=T0, expires=T0 + 100))
    await backend.uploads.mark_completed("stored")
    await backend.uploads.add(upload("open", created=T0 + 50, expires=T0 + 100))
    await backend.uploads.add(upload("stale", created=T0 + 10, expires=T0 + 100))  # never used
    await backend.uploads.add(upload("gone", created=T0, expires=T0 + 20))
    await backend.uploads.mark_completed("gone")
    await backend.uploads.add(upload("bobs", owner=BOB, created=T0 + 50, expires=T0 + 100))
    await backend.uploads.mark_completed("bobs")
    size = upload("x").size
    assert await backend.uploads.usage(ALICE, T0 + 60) == (size, 1)
    assert await backend.uploads.usage(ALICE, T0 + 60, open_since=T0 + 40) == (2 * size, 2)
    assert await backend.uploads.usage(ALICE, T0 + 60, open_since=T0 + 40, exclude="open") == (size, 1)
    assert await backend.uploads.usage(ALICE, T0 + 10) == (2 * size, 2)  # "gone" not yet
    assert await backend.uploads.usage("nobody@example.org", T0) == (0, 0)


async def test_upload_list_and_expired(backend):
    await backend.uploads.add(upload("a2", created=T0 + 2, expires=T0 + 100))
    await backend.uploads.add(upload("a1", created=T0 + 1, expires=T0 + 10))
    await backend.uploads.add(upload("b1", owner=BOB, created=T0, expires=T0 + 5))
    assert [u.id for u in await backend.uploads.list(ALICE)] == ["a1", "a2"]
    assert [u.id for u in await backend.uploads.list(BOB)] == ["b1"]
    assert await backend.uploads.list("nobody@example.org") == []
    assert await backend.uploads.expired(T0) == []
    assert [u.id for u in await backend.uploads.expired(T0 + 50)] == ["b1", "a1"]
    assert sorted(u.id for u in await backend.uploads.expired(T0 + 1000)) == ["a1", "a2", "b1"]
    await backend.uploads.remove("b1")
    assert [u.id for u in await backend.uploads.expired(T0 + 50)] == ["a1"]


# ---------------------------------------------------------------- the backend as a whole


async def test_everything_is_still_there_after_close_and_reopen(new_backend):
    first = await new_backend()
    await first.start()
    await first.accounts.create(account(ALICE))
    await first.rosters.put_item(ALICE, RosterItem(jid=BOB, subscription="both"))
    items = await fill(first.archive("archive"), n=20)
    await first.archive("offline").append(BOB, stanza(1))
    await first.keyvalue("private").set(ALICE, "k", b"v")
    await first.rooms.save(ROOM, {"subject": "hi"})
    await first.pubsub.set_node(ALICE, NODE, {"max_items": 1})
    await first.pubsub.publish(ALICE, NODE, pubsub_item("p", 1), max_items=1)
    await first.uploads.add(upload("slot"))
    await first.uploads.mark_completed("slot")
    await first.close()

    second = await new_backend()
    await second.start()
    try:
        assert await second.accounts.get(ALICE) == account(ALICE)
        assert await second.rosters.get(ALICE) == (1, {BOB: RosterItem(jid=BOB, subscription="both")})
        assert (await second.archive("archive").query(ALICE, ArchiveQuery())).items == items
        assert (await second.archive("offline").query(BOB, ArchiveQuery())).items == [stanza(1)]
        assert await second.keyvalue("private").get(ALICE, "k") == b"v"
        assert await second.rooms.get(ROOM) == {"subject": "hi"}
        assert await second.pubsub.get_node(ALICE, NODE) == {"max_items": 1}
        assert await second.pubsub.get_items(ALICE, NODE) == [pubsub_item("p", 1)]
        assert (await second.uploads.get("slot")).completed is True
        # And it keeps working: versions continue, appends stay idempotent.
        assert await second.rosters.put_item(ALICE, RosterItem(jid="c@example.net")) == 2
        assert await second.archive("archive").append(ALICE, items[0]) is False
    finally:
        await second.close()


async def test_the_event_loop_keeps_running_while_writes_are_in_flight(backend, backend_kind):
    """2,000 concurrent appends: a ticker on the loop keeps ticking, and it ticks before
    the first append returns (a backend doing its I/O on the loop could not let it).
    The memory backend has no I/O in flight: its appends are done within a few turns."""
    store = backend.archive("archive")
    ticks = 0
    ticks_at_first_done = None

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def append(i):
        nonlocal ticks_at_first_done
        result = await store.append(ALICE, stanza(i))
        if ticks_at_first_done is None:
            ticks_at_first_done = ticks
        return result

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        ticks_at_start = ticks
        results = await asyncio.gather(*(append(i) for i in range(2000)))
        ticks_at_end = ticks
    finally:
        ticking.cancel()
    assert all(results)
    assert ticks_at_first_done - ticks_at_start >= 2
    if backend_kind != "memory":
        assert ticks_at_end - ticks_at_start >= 10
    assert await store.count(ALICE) == 2000
