"""XEP-0313 Message Archive Management queries, with XEP-0059 result set paging: the
protocol half shared by every archive (a user's, a room's) over an ArchiveStore.

    request = parse_request(query_element, default_max=50, max_max=250)
    page = await store.query(owner, request.query)          # UnknownArchiveId -> item-not-found
    for item in request.ordered(page.items):
        await host.send(result_message(item, request, to=..., from_=...))
    return fin_element(page, request)                        # the iq result's payload

or all of it with `answer_query`. An unknown form field gets feature-not-implemented; an
id in the RSM set or in the 'before-id', 'after-id' or 'ids' fields that is not in the
archive gets item-not-found (XEP-0313 4.1.5, 4.1.3, 4.3.2). `search_form()` answers the
iq get that asks for the query form, `metadata_element()` the XEP-0313 metadata request.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree

from xmppd import forms
from xmppd.protocol.errors import BadRequest, FeatureNotImplemented, ItemNotFound, PolicyViolation
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.namespaces import NS_FORWARD
from xmppd.protocol.stanza import MESSAGE, delay_element, from_storage, make_element, stored_stanza, sub_element
from xmppd.storage.interfaces import ArchivedStanza, ArchivePage, ArchiveQuery, ArchiveStore, UnknownArchiveId

NS_MAM = "urn:xmpp:mam:2"
NS_MAM_EXTENDED = "urn:xmpp:mam:2#extended"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_SID = "urn:xmpp:sid:0"  # XEP-0359: <stanza-id by='archive' id='its id there'/>
STANZA_ID = f"{{{NS_SID}}}stanza-id"

_RSM_SET = f"{{{NS_RSM}}}set"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MamRequest:
    query: ArchiveQuery
    query_id: str | None  # echoed in every <result/>
    flip: bool = False  # XEP-0313 <flip-page/>: the page in reverse order

    def ordered(self, items: list[ArchivedStanza]) -> list[ArchivedStanza]:
        return list(reversed(items)) if self.flip else items


def archive_time() -> float:
    """Now, in whole milliseconds: the precision of the XEP-0203 stamps on results, so
    that a stamp read from a result, given back as 'start' or 'end', finds its item."""
    return time.time_ns() // 1_000_000 / 1000


def parse_datetime(value: str, var: str = "timestamp") -> float:
    """An XEP-0082 DateTime as Unix time; BadRequest when it is not one."""
    try:
        moment = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(text=f"{var}: {value!r} is not an XEP-0082 DateTime") from None
    if moment.tzinfo is None:
        raise BadRequest(text=f"{var}: {value!r} has no time zone")
    return moment.timestamp()


def search_form() -> etree._Element:
    """The reply payload to <iq type='get'><query xmlns='urn:xmpp:mam:2'/></iq>."""
    query = make_element(f"{{{NS_MAM}}}query")
    query.append(
        forms.build(
            "form",
            form_type=NS_MAM,
            fields=[
                forms.Field("with", "jid-single"),
                forms.Field("start", "text-single"),
                forms.Field("end", "text-single"),
                forms.Field("before-id", "text-single"),
                forms.Field("after-id", "text-single"),
                forms.Field("ids", "text-multi"),
            ],
        )
    )
    return query


def parse_request(query: etree._Element, *, default_max: int, max_max: int) -> MamRequest:
    """Read a <query xmlns='urn:xmpp:mam:2'/>: the form's filters and the RSM set.
    `max` defaults to `default_max` and is capped at `max_max` (XEP-0313 4.1.6)."""
    filters: dict = {}
    form = forms.find(query)
    if form is not None:
        data = forms.parse(form, form_type=NS_MAM)
        for var in data:
            if var not in ("FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids"):
                raise FeatureNotImplemented(text=f"unknown field {var}")  # XEP-0313 4.1.5
        with_ = forms.single(data, "with")
        if with_ is not None:
            try:
                filters["with_"] = str(JID.parse(with_))
            except InvalidJID:
                raise BadRequest(text=f"with: {with_!r} is not a JID") from None
        for var, key in (("start", "start"), ("end", "end")):
            value = forms.single(data, var)
            if value is not None:
                filters[key] = parse_datetime(value, var)
        filters["before_id"] = forms.single(data, "before-id")
        filters["after_id"] = forms.single(data, "after-id")
        ids = [value.strip() for value in data.get("ids", ()) if value.strip()]
        if len(ids) > max_max:
            raise PolicyViolation(text=f"at most {max_max} ids in one query")
        if ids:
            filters["ids"] = tuple(ids)
    limit, after, before = default_max, None, None
    rsm = query.find(_RSM_SET)
    if rsm is not None:
        if rsm.find(f"{{{NS_RSM}}}index") is not None:
            raise FeatureNotImplemented(text="RSM <index/> is not supported; page with after/before")
        text = rsm.findtext(f"{{{NS_RSM}}}max")
        if text is not None:
            try:
                limit = int(text)
            except ValueError:
                raise BadRequest(text="RSM <max/> must be a number") from None
            if limit < 0:
                raise BadRequest(text="RSM <max/> must not be negative")
        after = rsm.findtext(f"{{{NS_RSM}}}after")
        before_element = rsm.find(f"{{{NS_RSM}}}before")
        if before_element is not None:
            before = before_element.text or ""
        if after is not None and before is not None:
            raise BadRequest(text="RSM <after/> and <before/> together")
    return MamRequest(
        ArchiveQuery(**filters, after=after, before=before, max=min(limit, max_max)),
        query.get("queryid"),
        query.find(f"{{{NS_MAM}}}flip-page") is not None,
    )


def result_message(
    item: ArchivedStanza, request: MamRequest, *, to: str, from_: str, stanza: etree._Element | None = None
) -> etree._Element:
    """<message><result queryid id><forwarded><delay/>the stanza</forwarded></result></message>;
    `stanza` replaces the stored one (an archive may show less than it stored)."""
    message = make_element(MESSAGE, {"to": to, "from": from_})
    result = sub_element(message, f"{{{NS_MAM}}}result", {"queryid": request.query_id, "id": item.id})
    forwarded = sub_element(result, f"{{{NS_FORWARD}}}forwarded")
    forwarded.append(delay_element(from_, item.when))
    forwarded.append(from_storage(item.payload) if stanza is None else stanza)
    return message


def fin_element(page: ArchivePage, request: MamRequest) -> etree._Element:
    """<fin complete?><set><first/><last/><count/></set></fin>, the iq result's payload."""
    fin = make_element(f"{{{NS_MAM}}}fin", {"complete": "true" if page.complete else None})
    rsm = sub_element(fin, _RSM_SET)
    items = request.ordered(page.items)
    if items:
        sub_element(rsm, f"{{{NS_RSM}}}first", text=items[0].id)
        sub_element(rsm, f"{{{NS_RSM}}}last", text=items[-1].id)
    if page.count is not None:
        sub_element(rsm, f"{{{NS_RSM}}}count", text=str(page.count))
    return fin


async def answer_query(
    host,
    iq,
    store: ArchiveStore,
    owner: str,
    *,
    default_max: int,
    max_max: int,
    adjust: Callable[[ArchiveQuery], ArchiveQuery] | None = None,
    show: Callable[[etree._Element], etree._Element | None] | None = None,
) -> etree._Element:
    """Run the query of `iq` (a router Stanza) on `owner`'s archive: send a result message
    per item to the requester, return the <fin/> for the iq result. `adjust` rewrites the
    filters (a room maps 'with' to a nickname); `show` edits each stanza before it goes
    out, or drops it with None. A stored stanza that no longer parses is left out."""
    request = parse_request(iq.element[0], default_max=default_max, max_max=max_max)
    if adjust is not None:
        request = dataclasses.replace(request, query=adjust(request.query))
    try:
        if request.query.ids and not await _all_stored(store, owner, request.query.ids):
            raise UnknownArchiveId(request.query.ids)
        page = await store.query(owner, request.query)
    except UnknownArchiveId:
        raise ItemNotFound(text="no such item in the archive") from None
    archive_jid = str(iq.to.bare) if iq.to is not None else owner
    for item in request.ordered(page.items):
        stanza = stored_stanza(item.payload, log, archive=owner, id=item.id)
        if stanza is not None and show is not None:
            stanza = show(stanza)
        if stanza is None:
            continue
        await host.send(result_message(item, request, to=str(iq.from_), from_=archive_jid, stanza=stanza))
    return fin_element(page, request)


async def _all_stored(store: ArchiveStore, owner: str, ids: tuple[str, ...]) -> bool:
    """XEP-0313 4.1.3: every id of an 'ids' field must be in the archive, whatever the other filters."""
    wanted = set(ids)
    page = await store.query(owner, ArchiveQuery(ids=tuple(wanted), max=len(wanted)))
    return len(page.items) == len(wanted)


async def metadata_element(store: ArchiveStore, owner: str) -> etree._Element:
    """XEP-0313 <metadata/>: the ids and times of the archive's first and last items."""
    metadata = make_element(f"{{{NS_MAM}}}metadata")
    first = await store.query(owner, ArchiveQuery(max=1))
    if first.items:
        last = await store.query(owner, ArchiveQuery(before="", max=1))
        for tag, item in (("start", first.items[0]), ("end", last.items[0])):
            sub_element(
                metadata,
                f"{{{NS_MAM}}}{tag}",
                {"id": item.id, "timestamp": delay_element(owner, item.when).get("stamp")},
            )  # XEP-0082
    return metadata
