"""Node configuration (XEP-0060 section 16.4.4 pubsub#node_config) of PEP's nodes and the
pubsub service's, and the publish options of XEP-0223 read as preconditions.

A node's configuration is kept as a JSON-able dict in the PubSubStore: the field names
without their "pubsub#" prefix, booleans as booleans, `max_items` as a number or "max"
(the service's own limit), and, beside the configuration proper, `subscribers`: the
JIDs with an explicit subscription (XEP-0060 section 6.1).
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from xmppd import forms
from xmppd.protocol.errors import BadRequest, Conflict, NotAcceptable
from xmppd.pubsub import pubsub_error

NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
META_DATA = "http://jabber.org/protocol/pubsub#meta-data"

ACCESS_MODELS = ("open", "presence", "roster", "whitelist")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")
NOTIFICATION_TYPES = ("headline", "normal")
MAX = "max"

# XEP-0163 section 7 and Prosody's defaults: presence access, one item kept.
DEFAULTS: dict[str, Any] = {
    "access_model": "presence",
    "persist_items": True,
    "max_items": 1,
    "publish_model": "publishers",
    "send_last_published_item": "on_sub_and_presence",
    "deliver_notifications": True,
    "deliver_payloads": True,
    "notify_retract": True,
    "notify_delete": True,
    "notification_type": "headline",
    "roster_groups_allowed": [],
    "title": "",
    "type": "",
}
BOOLEANS = frozenset(("persist_items", "deliver_notifications", "deliver_payloads", "notify_retract", "notify_delete"))
CHOICES = {
    "access_model": ACCESS_MODELS,
    "send_last_published_item": SEND_LAST,
    "notification_type": NOTIFICATION_TYPES,
    "publish_model": ("publishers",),
}


def new_config(overrides: dict | None = None) -> dict:
    config = {key: list(value) if isinstance(value, list) else value for key, value in DEFAULTS.items()}
    config.update(overrides or {})
    config["subscribers"] = []
    return config


def max_items(config: dict, limit: int) -> int:
    """How many items the node keeps: its max_items, "max" being the service's limit."""
    value = config.get("max_items", DEFAULTS["max_items"])
    return limit if value == MAX else min(int(value), limit)


def config_fields(config: dict, limit: int) -> list[forms.Field]:
    """The configuration form, filled with the node's values (XEP-0060 section 8.2)."""
    flag = lambda key: ("1" if config.get(key, DEFAULTS[key]) else "0",)  # noqa: E731
    value = lambda key: (str(config.get(key, DEFAULTS[key])),)  # noqa: E731
    return [
        forms.Field("pubsub#title", "text-single", "A friendly name for the node", value("title")),
        forms.Field(
            "pubsub#type", "text-single", "The type of node data, usually its payload namespace", value("type")
        ),
        forms.Field(
            "pubsub#access_model",
            "list-single",
            "Who may subscribe and retrieve items",
            value("access_model"),
            options=ACCESS_MODELS,
        ),
        forms.Field(
            "pubsub#roster_groups_allowed",
            "list-multi",
            "Roster groups allowed to subscribe",
            tuple(config.get("roster_groups_allowed", ())),
        ),
        forms.Field("pubsub#persist_items", "boolean", "Persist items to storage", flag("persist_items")),
        forms.Field(
            "pubsub#max_items",
            "text-single",
            f"Max number of items to persist (at most {limit}, or max)",
            value("max_items"),
        ),
        forms.Field(
            "pubsub#publish_model", "list-single", "Who may publish", value("publish_model"), options=("publishers",)
        ),
        forms.Field(
            "pubsub#send_last_published_item",
            "list-single",
            "When to send the last published item",
            value("send_last_published_item"),
            options=SEND_LAST,
        ),
        forms.Field(
            "pubsub#deliver_notifications", "boolean", "Deliver event notifications", flag("deliver_notifications")
        ),
        forms.Field(
            "pubsub#deliver_payloads", "boolean", "Deliver payloads with event notifications", flag("deliver_payloads")
        ),
        forms.Field(
            "pubsub#notify_retract", "boolean", "Notify subscribers when items are removed", flag("notify_retract")
        ),
        forms.Field(
            "pubsub#notify_delete", "boolean", "Notify subscribers when the node is deleted", flag("notify_delete")
        ),
        forms.Field(
            "pubsub#notification_type",
            "list-single",
            "Message type of notifications",
            value("notification_type"),
            options=NOTIFICATION_TYPES,
        ),
    ]


def read_options(data: dict[str, list[str]], limit: int) -> dict[str, Any]:
    """Node configuration values from a submitted node_config or publish-options form,
    keyed without the "pubsub#" prefix. Unknown fields are returned as None values (a
    configuration ignores them, a precondition on them cannot be met); bad values get
    not-acceptable, an unsupported access model its own condition (XEP-0060 8.1.2)."""
    options: dict[str, Any] = {}
    for var in data:
        if var == forms.FORM_TYPE:
            continue
        key = var.removeprefix("pubsub#")
        if not var.startswith("pubsub#") or key not in DEFAULTS:
            options[key] = None
            continue
        options[key] = _value(key, data, var, limit)
    return options


def _value(key: str, data, var: str, limit: int):
    if key == "roster_groups_allowed":
        return [value for value in data[var] if value]
    if key in BOOLEANS:
        try:
            return forms.boolean(data, var, DEFAULTS[key])
        except BadRequest:
            raise NotAcceptable(text=f"{var} must be a boolean") from None
    value = (forms.single(data, var, "") or "").strip()
    if key == "max_items":
        if value == MAX:
            return MAX
        if not value.isdigit() or not 0 < int(value) <= limit:
            raise NotAcceptable(
                text=f"pubsub#max_items must be a number from 1 to {limit} (extensions.pep.max_items), or max"
            )
        return int(value)
    if key == "access_model" and value not in ACCESS_MODELS:
        raise pubsub_error(NotAcceptable, "unsupported-access-model")
    if key in CHOICES and value not in CHOICES[key]:
        raise NotAcceptable(text=f"{var} must be one of {', '.join(CHOICES[key])}")
    return value


def configure(config: dict, options: dict[str, Any]) -> dict:
    """The configuration `config` with the known `options` applied."""
    changed = dict(config)
    changed.update({key: value for key, value in options.items() if value is not None})
    return changed


def check_preconditions(config: dict, options: dict[str, Any], limit: int) -> None:
    """XEP-0223 / XEP-0060 7.1.5: each publish option must equal the node's value."""
    for key, wanted in options.items():
        current = config.get(key, DEFAULTS.get(key))
        if key == "max_items" and wanted is not None:
            matches = max_items({"max_items": wanted}, limit) == max_items(config, limit)
        elif key == "roster_groups_allowed" and wanted is not None:
            matches = sorted(wanted) == sorted(current or ())
        else:
            matches = wanted is not None and wanted == current
        if not matches:
            raise pubsub_error(Conflict, "precondition-not-met")


def config_form(config: dict, limit: int) -> etree._Element:
    """The configuration form an owner fills in (XEP-0060 sections 8.2 and 8.3)."""
    return forms.build("form", form_type=NODE_CONFIG, fields=config_fields(config, limit))


def form_options(parent: etree._Element | None, form_type: str, limit: int) -> dict[str, Any] | None:
    """The options of the data form in `parent` (<publish-options/>, or <configure/> beside
    <create/>), None when there is none."""
    form = forms.find(parent) if parent is not None else None
    if form is None:
        return None
    return read_options(forms.parse(form, form_type=form_type), limit)


def submitted_config(configure: etree._Element, limit: int) -> dict[str, Any] | None:
    """The options an owner submits to configure a node (XEP-0060 section 8.2); None when
    it cancels the configuration."""
    form = forms.find(configure)
    if form is None:
        raise BadRequest(text="a data form is expected")
    if form.get("type") == "cancel":
        return None
    return read_options(forms.parse(form, form_type=NODE_CONFIG), limit)


def kept_items(config: dict, limit: int) -> int:
    """How many of its stored items a node keeps: none when it persists none."""
    return max_items(config, limit) if config.get("persist_items", True) else 0


async def drop_items(store, service: str, node: str, keep: int = 0) -> None:
    """Retract the stored items of a node beyond the newest `keep` (all of them: a purge,
    section 8.5; beyond `kept_items` after a configuration change, section 8.2)."""
    for stale in (await store.get_items(service, node))[keep:]:
        await store.retract(service, node, stale.id)


def meta_data(config: dict, owners: tuple[str, ...], default_access: str) -> etree._Element:
    """The pubsub#meta-data form of a node's disco#info (section 5.4)."""
    return forms.build(
        "result",
        form_type=META_DATA,
        fields=[
            forms.Field("pubsub#type", None, values=(config.get("type") or "",)),
            forms.Field("pubsub#title", None, values=(config.get("title") or "",)),
            forms.Field("pubsub#access_model", None, values=(config.get("access_model", default_access),)),
            forms.Field("pubsub#owner", None, values=owners),
        ],
    )
