"""XEP-0227 Portable Import/Export Format (version 1.1): ``xmppctl export --xep0227 FILE``
and ``xmppctl import --xep0227 FILE``, through the storage interfaces, so any backend.

Per user: the account with its SCRAM secrets (``<scram-credentials/>`` of
``urn:xmpp:pie:0#scram``, no password), the roster (``jabber:iq:roster``, with the
pending inbound requests as ``<presence type='subscribe'/>``), the vCard
(``vcard-temp``), private XML (``jabber:iq:private``), offline messages (each with its
XEP-0203 delay: the time it was stored), the message archive (``urn:xmpp:pie:0#mam``:
MAM results with their stamps) and PEP (node configurations under ``pubsub#owner``,
items under ``pubsub``). Rooms, the pubsub service and uploads are not in XEP-0227;
``xmppctl backup`` carries everything.

Import reads files of the XEP's current namespace and of its older one (whose examples
carry a ``password`` attribute: then the SCRAM secrets are derived from it), with
XInclude of relative files. An existing account, or a host this server does not serve,
is left alone and reported, as the XEP asks of data it cannot import.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lxml import etree

from xmppd import forms
from xmppd.accounts import HASHES
from xmppd.ids import time_ordered_id
from xmppd.mam import parse_datetime
from xmppd.protocol.errors import StanzaError
from xmppd.protocol.namespaces import NS_CLIENT, NS_DELAY
from xmppd.protocol.sasl import ScramCredentials, derive_scram_credentials
from xmppd.protocol.stanza import delay_element, from_storage, make_element, to_storage
from xmppd.pubsub import nodes
from xmppd.storage.interfaces import Account, ArchivedStanza, ArchiveQuery, PubSubItem, RosterItem

NS_PIE = "urn:xmpp:pie:0"
NS_PIE_OLD = "http://www.xmpp.org/extensions/xep-0227.html#ns"  # before version 1.0
NS_SCRAM = "urn:xmpp:pie:0#scram"
NS_XINCLUDE = "http://www.w3.org/2001/XInclude"
NS_ROSTER = "jabber:iq:roster"
NS_PRIVATE = "jabber:iq:private"
NS_VCARD = "vcard-temp"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_OWNER = NS_PUBSUB + "#owner"
NS_PIE_MAM = "urn:xmpp:pie:0#mam"
NS_MAM = "urn:xmpp:mam:2"
NS_FORWARD = "urn:xmpp:forward:0"

# SCRAM mechanism <-> xmppd's hash names (xmppd.accounts.HASHES).
MECHANISMS = {"sha1": "SCRAM-SHA-1", "sha256": "SCRAM-SHA-256"}
# Where the extensions keep what XEP-0227 carries (their stores, by name).
OFFLINE = "offline"  # extensions/offline.py
ARCHIVE = "archive"  # extensions/mam.py: the users' message archives
PAGE = 500  # archive items read at once
VCARDS, VCARD_KEY = "vcard", "vcard-temp"  # extensions/vcard.py
PRIVATE = "private"  # extensions/private.py: key = the fragment's {ns}tag
PENDING = "roster-pending"  # extensions/presence.py: contact -> subscribe stanza
MAX_INCLUDE_DEPTH = 4  # server-data -> host -> user files, and a little more
# Enough for any node a file brings; the server applies its own max_items when it serves.
MAX_ITEMS_LIMIT = 1_000_000

# The children of <user/> that the import reads (besides <offline-messages/>).
USER_DATA = frozenset(
    (
        f"{{{NS_SCRAM}}}scram-credentials",
        f"{{{NS_ROSTER}}}query",
        f"{{{NS_CLIENT}}}presence",
        f"{{{NS_VCARD}}}vCard",
        f"{{{NS_PRIVATE}}}query",
        f"{{{NS_PUBSUB_OWNER}}}pubsub",
        f"{{{NS_PUBSUB}}}pubsub",
        f"{{{NS_PIE_MAM}}}archive",
    )
)

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_blank_text=True)


class PortableError(Exception):
    """A file that cannot be imported; the message says why."""


@dataclass
class Report:
    """What an import or export did, for the operator."""

    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def add(self, name: str, count: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + count


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _child(parent: etree._Element, tag: str, text: str | None = None, **attributes: str) -> etree._Element:
    namespace = etree.QName(tag).namespace
    nsmap = None if namespace == etree.QName(parent).namespace else {None: namespace}
    element = etree.SubElement(
        parent, tag, {key: value for key, value in attributes.items() if value is not None}, nsmap=nsmap
    )
    element.text = text
    return element


# ---------------------------------------------------------------- export


async def export(stores, domains: list[str], path: str) -> Report:
    """Write the users of `domains` to the new file `path` (made readable by its owner only)."""
    report = Report()
    root = make_element(f"{{{NS_PIE}}}server-data")
    for domain in domains:
        host = _child(root, f"{{{NS_PIE}}}host", jid=domain)
        for jid in await stores.accounts.list(domain):
            account = await stores.accounts.get(jid)
            if account is not None:
                host.append(await _export_user(stores, account, report))
    data = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # password keys inside
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    return report


async def _export_user(stores, account: Account, report: Report) -> etree._Element:
    jid = account.jid
    user = make_element(f"{{{NS_PIE}}}user", {"name": jid.partition("@")[0]})
    report.add("accounts")
    for name, secret in account.secrets.items():
        scram = _child(user, f"{{{NS_SCRAM}}}scram-credentials", mechanism=MECHANISMS.get(name, name))
        _child(scram, f"{{{NS_SCRAM}}}iter-count", str(secret.iterations))
        _child(scram, f"{{{NS_SCRAM}}}salt", _b64(secret.salt))
        _child(scram, f"{{{NS_SCRAM}}}server-key", _b64(secret.server_key))
        _child(scram, f"{{{NS_SCRAM}}}stored-key", _b64(secret.stored_key))

    version, items = await stores.rosters.get(jid)
    if version or items:
        roster = _child(user, f"{{{NS_ROSTER}}}query", ver=str(version))
        for item in items.values():
            element = _child(
                roster,
                f"{{{NS_ROSTER}}}item",
                jid=item.jid,
                name=item.name,
                subscription=item.subscription,
                ask="subscribe" if item.ask else None,
                approved="true" if item.approved else None,
            )
            for group in item.groups:
                _child(element, f"{{{NS_ROSTER}}}group", group)
        report.add("roster items", len(items))
    pending = stores.keyvalue(PENDING)
    for contact in await pending.keys(jid):
        request = await pending.get(jid, contact)
        if request is not None:
            user.append(from_storage(request))
            report.add("subscription requests")

    vcard = await stores.keyvalue(VCARDS).get(jid, VCARD_KEY)
    if vcard is not None:
        user.append(from_storage(vcard))
        report.add("vcards")

    private = stores.keyvalue(PRIVATE)
    fragments = [data for key in await private.keys(jid) if (data := await private.get(jid, key)) is not None]
    if fragments:
        query = _child(user, f"{{{NS_PRIVATE}}}query")
        for data in fragments:
            query.append(from_storage(data))
        report.add("private fragments", len(fragments))

    queued = (await stores.archive(OFFLINE).query(jid, ArchiveQuery())).items
    if queued:
        offline = _child(user, f"{{{NS_PIE}}}offline-messages")
        for item in queued:  # oldest first, as the XEP asks
            message = from_storage(item.payload)
            if message.find(f"{{{NS_DELAY}}}delay") is None:
                message.append(delay_element(jid.partition("@")[2], item.when))
            offline.append(message)
        report.add("offline messages", len(queued))

    archived, after = stores.archive(ARCHIVE), None
    while page := (await archived.query(jid, ArchiveQuery(after=after, max=PAGE, count=False))).items:
        archive = user.find(f"{{{NS_PIE_MAM}}}archive")
        if archive is None:
            archive = _child(user, f"{{{NS_PIE_MAM}}}archive")
        for item in page:
            forwarded = _child(_child(archive, f"{{{NS_MAM}}}result", id=item.id), f"{{{NS_FORWARD}}}forwarded")
            forwarded.append(delay_element(jid.partition("@")[2], item.when))
            forwarded.append(from_storage(item.payload))
        report.add("archived messages", len(page))
        after = page[-1].id

    names = await stores.pubsub.list_nodes(jid)
    if names:
        owner = _child(user, f"{{{NS_PUBSUB_OWNER}}}pubsub")
        published = _child(user, f"{{{NS_PUBSUB}}}pubsub")
        for name in names:
            config = await stores.pubsub.get_node(jid, name)
            if config is None:
                continue
            _export_node_config(owner, name, config)
            items_element = _child(published, f"{{{NS_PUBSUB}}}items", node=name)
            for item in reversed(await stores.pubsub.get_items(jid, name)):  # oldest first
                element = _child(items_element, f"{{{NS_PUBSUB}}}item", id=item.id, publisher=item.publisher)
                element.append(from_storage(item.payload))
                report.add("pep items")
            report.add("pep nodes")
    return user


def _export_node_config(owner: etree._Element, name: str, config: dict) -> None:
    fields = [forms.hidden_form_type(nodes.NODE_CONFIG)]
    for key, value in config.items():
        if key == "subscribers":
            continue
        values = (
            tuple(value)
            if isinstance(value, list)
            else (("1" if value else "0",) if isinstance(value, bool) else (str(value),))
        )
        fields.append(forms.Field(f"pubsub#{key}", None, values=values))
    _child(owner, f"{{{NS_PUBSUB_OWNER}}}configure", node=name).append(forms.build("submit", fields=fields))
    if config.get("subscribers"):
        subscriptions = _child(owner, f"{{{NS_PUBSUB_OWNER}}}subscriptions", node=name)
        for subscriber in config["subscribers"]:
            _child(subscriptions, f"{{{NS_PUBSUB_OWNER}}}subscription", jid=subscriber, subscription="subscribed")


# ---------------------------------------------------------------- import


def read_file(path: str) -> etree._Element:
    """The <server-data/> of `path`, its XIncludes of relative files resolved."""
    root = _parse_including(path, depth=0)
    if root.tag not in (f"{{{NS_PIE}}}server-data", f"{{{NS_PIE_OLD}}}server-data"):
        raise PortableError(f"{path}: the root element is {root.tag}, not XEP-0227's <server-data/>")
    return root


def _parse_including(path: str, depth: int) -> etree._Element:
    """Parse `path` and put in place of each XInclude the file it names, checked the
    same way: XML only, no DTD, a relative path below the including file's directory
    (what XEP-0227 section 5 asks an importer to support, and nothing that reaches out)."""
    try:
        tree = etree.parse(path, _PARSER)
    except (OSError, etree.XMLSyntaxError) as exc:
        raise PortableError(f"{path}: cannot read it as XML ({exc})") from None
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:
        raise PortableError(f"{path}: a document type declaration is not accepted")
    root = tree.getroot()
    for include in list(root.iter(f"{{{NS_XINCLUDE}}}include")):
        href = include.get("href", "")
        if (
            include.get("parse")
            or include.get("xpointer")
            or not href
            or href.startswith("/")
            or ":" in href
            or ".." in href.split("/")
            or depth >= MAX_INCLUDE_DEPTH
        ):
            raise PortableError(
                f"{path}: only XIncludes of relative files below its directory are "
                f"supported, {MAX_INCLUDE_DEPTH} deep at most (href={href!r})"
            )
        included = _parse_including(os.path.join(os.path.dirname(path), href), depth + 1)
        included.tail = include.tail
        if include is root:
            return included
        include.getparent().replace(include, included)
    return root


async def import_file(
    stores, domains: list[str], path: str, progress: Callable[[str], None] = lambda text: None
) -> Report:
    """Import the users of `path` whose host is one of `domains` into `stores`."""
    root = read_file(path)
    namespace = etree.QName(root).namespace
    report = Report()
    for host in root.iterchildren(f"{{{namespace}}}host"):
        domain = host.get("jid", "")
        if domain not in domains:
            report.warnings.append(f"host {domain!r} is not served here; its users were not imported")
            continue
        for user in host.iterchildren(f"{{{namespace}}}user"):
            await _import_user(stores, namespace, f"{user.get('name', '')}@{domain}", user, report)
        progress(f"host {domain}")
    known = {f"{{{namespace}}}offline-messages", *USER_DATA}
    ignored = {
        child.tag
        for host in root.iterchildren(f"{{{namespace}}}host")
        for user in host.iterchildren(f"{{{namespace}}}user")
        for child in user
        if isinstance(child.tag, str) and child.tag not in known
    }
    report.warnings += [f"{tag} in <user/> is not imported by xmppd; ignored" for tag in sorted(ignored)]
    return report


async def _import_user(stores, namespace: str, jid: str, user: etree._Element, report: Report) -> None:
    secrets = _secrets(user)
    if not user.get("name") or not secrets:
        report.warnings.append(f"{jid}: no name, or neither SCRAM credentials nor a password; not imported")
        return
    if not await stores.accounts.create(Account(jid, secrets, time.time())):
        report.warnings.append(f"{jid}: the account exists already; left as it is")
        return
    report.add("accounts")

    roster = user.find(f"{{{NS_ROSTER}}}query")
    if roster is not None:
        items = [
            RosterItem(
                item.get("jid"),
                item.get("name"),
                item.get("subscription", "none"),
                ask=item.get("ask") == "subscribe",
                approved=item.get("approved") in ("true", "1"),
                groups=tuple(group.text or "" for group in item.iterfind(f"{{{NS_ROSTER}}}group")),
            )
            for item in roster.iterfind(f"{{{NS_ROSTER}}}item")
            if item.get("jid")
        ]
        version = roster.get("ver") or roster.get("version") or "0"
        await stores.rosters.replace(jid, int(version) if version.isdigit() else 1, items)
        report.add("roster items", len(items))
    for request in user.iterfind(f"{{{NS_CLIENT}}}presence[@type='subscribe']"):
        contact = request.get("from", "").split("/")[0]
        if contact:
            await stores.keyvalue(PENDING).set(jid, contact, to_storage(request))
            report.add("subscription requests")

    vcard = user.find(f"{{{NS_VCARD}}}vCard")
    if vcard is not None:
        await stores.keyvalue(VCARDS).set(jid, VCARD_KEY, to_storage(vcard))
        report.add("vcards")

    private = user.find(f"{{{NS_PRIVATE}}}query")
    for fragment in private if private is not None else ():
        await stores.keyvalue(PRIVATE).set(jid, fragment.tag, to_storage(fragment))
        report.add("private fragments")

    offline = user.find(f"{{{namespace}}}offline-messages")
    for message in offline.iterfind(f"{{{NS_CLIENT}}}message") if offline is not None else ():
        # Queued in the file's order (oldest first); the delay, kept in the message, is
        # what its recipient sees. Stamps before 1970 (the XEP's example) are no queue time.
        now, stamp = time.time(), message.find(f"{{{NS_DELAY}}}delay")
        try:
            when = parse_datetime(stamp.get("stamp", "")) if stamp is not None else now
        except StanzaError:
            when = now
        await stores.archive(OFFLINE).append(
            jid,
            ArchivedStanza(
                time_ordered_id(), min(max(when, 0.0), now), message.get("from", "").split("/")[0], to_storage(message)
            ),
        )
        report.add("offline messages")

    archive = user.find(f"{{{NS_PIE_MAM}}}archive")
    for result in archive.iterfind(f"{{{NS_MAM}}}result") if archive is not None else ():
        message = result.find(f"{{{NS_FORWARD}}}forwarded/{{{NS_CLIENT}}}message")
        stamp = result.find(f"{{{NS_FORWARD}}}forwarded/{{{NS_DELAY}}}delay")
        try:
            when = parse_datetime(stamp.get("stamp", "")) if stamp is not None else None
        except StanzaError:
            when = None
        if message is None or when is None or when < 0:
            report.warnings.append(f"{jid}: an archived message without a message or a usable stamp; skipped")
            continue
        sender, recipient = (message.get(name, "").split("/")[0] for name in ("from", "to"))
        # Ids made here: the archive orders by id, another server's ids need not sort by time.
        await stores.archive(ARCHIVE).append(
            jid,
            ArchivedStanza(time_ordered_id(when), when, sender if recipient == jid else recipient, to_storage(message)),
        )
        report.add("archived messages")

    await _import_pep(stores, jid, user, report)


def _secrets(user: etree._Element) -> dict[str, ScramCredentials]:
    secrets = {}
    by_mechanism = {mechanism: name for name, mechanism in MECHANISMS.items()}
    for scram in user.iterfind(f"{{{NS_SCRAM}}}scram-credentials"):
        name = by_mechanism.get(scram.get("mechanism", ""))
        try:
            if name is not None:
                secrets[name] = ScramCredentials(
                    salt=base64.b64decode(scram.findtext(f"{{{NS_SCRAM}}}salt") or "", validate=True),
                    iterations=int(scram.findtext(f"{{{NS_SCRAM}}}iter-count") or ""),
                    stored_key=base64.b64decode(scram.findtext(f"{{{NS_SCRAM}}}stored-key") or "", validate=True),
                    server_key=base64.b64decode(scram.findtext(f"{{{NS_SCRAM}}}server-key") or "", validate=True),
                )
        except ValueError:
            continue
    if not secrets and user.get("password"):
        secrets = {name: derive_scram_credentials(user.get("password"), name) for name in HASHES}
    return secrets


async def _import_pep(stores, jid: str, user: etree._Element, report: Report) -> None:
    configs: dict[str, dict] = {}
    owner = user.find(f"{{{NS_PUBSUB_OWNER}}}pubsub")
    for configure in owner.iterfind(f"{{{NS_PUBSUB_OWNER}}}configure") if owner is not None else ():
        form = forms.find(configure)
        try:
            options = nodes.read_options(forms.parse(form), MAX_ITEMS_LIMIT) if form is not None else {}
        except StanzaError as exc:
            report.warnings.append(f"{jid}: PEP node {configure.get('node')!r}: {exc.text}; defaults used")
            options = {}
        configs[configure.get("node", "")] = nodes.configure(nodes.new_config(), options)
    for subscriptions in owner.iterfind(f"{{{NS_PUBSUB_OWNER}}}subscriptions") if owner is not None else ():
        config = configs.setdefault(subscriptions.get("node", ""), nodes.new_config())
        config["subscribers"] = [
            s.get("jid")
            for s in subscriptions.iterfind(f"{{{NS_PUBSUB_OWNER}}}subscription")
            if s.get("jid") and s.get("subscription", "subscribed") == "subscribed"
        ]
    published = user.find(f"{{{NS_PUBSUB}}}pubsub")
    items = {
        element.get("node", ""): element
        for element in (published.iterfind(f"{{{NS_PUBSUB}}}items") if published is not None else ())
    }
    for name in dict.fromkeys([*configs, *items]):
        if not name:
            continue
        await stores.pubsub.set_node(jid, name, configs.get(name) or nodes.new_config())
        report.add("pep nodes")
        for number, item in enumerate(items[name].iterfind(f"{{{NS_PUBSUB}}}item") if name in items else ()):
            if len(item) != 1:
                continue
            await stores.pubsub.publish(
                jid,
                name,
                PubSubItem(
                    item.get("id") or f"imported-{number}",
                    to_storage(item[0]),
                    item.get("publisher") or jid,
                    time.time(),
                ),
                max_items=None,
            )
            report.add("pep items")
