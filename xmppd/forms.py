"""XEP-0004 Data Forms: build a form, read a submitted one.

Shared by every extension that speaks forms (XEP-0077 registration, XEP-0050/0133
commands, MAM, MUC configuration, pubsub). A submission is read into
``{var: [values]}``; anything malformed raises BadRequest. FORM_TYPE (XEP-0068) is a
hidden field like any other: `build(form_type=...)` puts it first, `form_type_of()` reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from lxml import etree

from xmppd.protocol.errors import BadRequest
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.protocol.stanza import make_element, sub_element

NS_DATA = "jabber:x:data"
FORM_TYPE = "FORM_TYPE"
FORM_TYPES = frozenset({"form", "submit", "cancel", "result"})
FIELD_TYPES = frozenset(
    {
        "boolean",
        "fixed",
        "hidden",
        "jid-multi",
        "jid-single",
        "list-multi",
        "list-single",
        "text-multi",
        "text-private",
        "text-single",
    }
)
MULTI_VALUED = frozenset({"jid-multi", "list-multi", "text-multi"})
TRUE, FALSE = frozenset({"1", "true"}), frozenset({"0", "false"})

_X = f"{{{NS_DATA}}}x"
_FIELD = f"{{{NS_DATA}}}field"
_VALUE = f"{{{NS_DATA}}}value"

Data = Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class Field:
    """One form field. `options` are values or (value, label) pairs; `type` None leaves
    the attribute out (fields of a result or a submission need none)."""

    var: str | None = None
    type: str | None = "text-single"
    label: str | None = None
    values: tuple[str, ...] = ()
    options: tuple = ()
    required: bool = False
    desc: str | None = None

    def __post_init__(self):
        if self.type is not None and self.type not in FIELD_TYPES:
            raise ValueError(f"unknown data form field type {self.type!r}")

    def append_to(self, parent: etree._Element) -> etree._Element:
        element = sub_element(parent, _FIELD, {"var": self.var, "type": self.type, "label": self.label})
        if self.desc:
            sub_element(element, f"{{{NS_DATA}}}desc", text=self.desc)
        if self.required:
            sub_element(element, f"{{{NS_DATA}}}required")
        for value in self.values:
            sub_element(element, _VALUE, text=value)
        for option in self.options:
            value, label = option if isinstance(option, tuple) else (option, None)
            sub_element(sub_element(element, f"{{{NS_DATA}}}option", {"label": label}), _VALUE, text=value)
        return element


def hidden_form_type(namespace: str) -> Field:
    return Field(FORM_TYPE, "hidden", values=(namespace,))


def build(
    type_: str = "form",
    *,
    title: str | None = None,
    instructions: str | None = None,
    fields: Iterable[Field] = (),
    form_type: str | None = None,
    reported: Sequence[Field] = (),
    items: Iterable[Iterable[Field]] = (),
) -> etree._Element:
    """An <x xmlns='jabber:x:data'/> element; `reported` and `items` make a table (results)."""
    if type_ not in FORM_TYPES:
        raise ValueError(f"unknown data form type {type_!r}")
    x = make_element(_X, {"type": type_})
    if title is not None:
        sub_element(x, f"{{{NS_DATA}}}title", text=title)
    for line in instructions.split("\n") if instructions else ():
        sub_element(x, f"{{{NS_DATA}}}instructions", text=line)
    if form_type is not None:
        hidden_form_type(form_type).append_to(x)
    for field in fields:
        field.append_to(x)
    if reported:
        header = sub_element(x, f"{{{NS_DATA}}}reported")
        for field in reported:
            field.append_to(header)
        for item in items:
            row = sub_element(x, f"{{{NS_DATA}}}item")
            for field in item:
                field.append_to(row)
    return x


def is_form(element: etree._Element) -> bool:
    return element.tag == _X


def find(parent: etree._Element, form_type: str | None = None) -> etree._Element | None:
    """The first data form child of `parent` (with that FORM_TYPE, when given)."""
    for x in parent.iterchildren(_X):
        if form_type is None or form_type_of(x) == form_type:
            return x
    return None


def form_type_of(x: etree._Element) -> str | None:
    for field in x.iterchildren(_FIELD):
        if field.get("var") == FORM_TYPE:
            return field.findtext(_VALUE)
    return None


def parse(
    x: etree._Element, *, form_type: str | None = None, types: Iterable[str] = ("submit",)
) -> dict[str, list[str]]:
    """A submitted form as {var: [values]} (FORM_TYPE included); BadRequest when it is not
    a form of one of `types`, a field has no var or comes twice, or its FORM_TYPE differs."""
    if not is_form(x):
        raise BadRequest(text="a data form (jabber:x:data) is expected")
    if x.get("type") not in types:
        raise BadRequest(text=f"the data form must be of type {' or '.join(types)}")
    data: dict[str, list[str]] = {}
    for field in x.iterchildren(_FIELD):
        var = field.get("var")
        if not var:
            raise BadRequest(text="a submitted field has no var")
        if var in data:
            raise BadRequest(text=f"field {var} appears twice")
        data[var] = [value.text or "" for value in field.iterchildren(_VALUE)]
    if form_type is not None and data.get(FORM_TYPE, [form_type]) != [form_type]:
        raise BadRequest(text=f"FORM_TYPE must be {form_type}")
    return data


def check(data: Data, fields: Iterable[Field]) -> None:
    """Validate a parsed submission against the fields of the form that was offered:
    required fields filled, one value where one is allowed, list values among the
    options, booleans and JIDs well formed. Fields the form did not offer are ignored."""
    for field in fields:
        values = data.get(field.var)
        if values is None or not any(v.strip() for v in values):
            if field.required:
                raise BadRequest(text=f"field {field.var} is required")
            continue
        if field.type not in MULTI_VALUED and len(values) > 1:
            raise BadRequest(text=f"field {field.var} takes one value")
        if field.type == "boolean" and values[0].strip() not in TRUE | FALSE:
            raise BadRequest(text=f"field {field.var} must be a boolean")
        if field.type in ("list-single", "list-multi") and field.options:
            allowed = {o[0] if isinstance(o, tuple) else o for o in field.options}
            if not set(values) <= allowed:
                raise BadRequest(text=f"field {field.var} has a value that is not an option")
        if field.type in ("jid-single", "jid-multi"):
            for value in values:
                parse_jid(value, field.var)


def single(data: Data, var: str, default: str | None = None) -> str | None:
    """The one value of `var` (stripped), `default` when absent or empty."""
    values = data.get(var) or ()
    if len(values) > 1:
        raise BadRequest(text=f"field {var} takes one value")
    value = values[0].strip() if values else ""
    return value or default


def text(data: Data, var: str) -> str:
    """A text-multi field as one string, its values joined by newlines."""
    return "\n".join(data.get(var) or ())


def boolean(data: Data, var: str, default: bool) -> bool:
    value = single(data, var)
    if value is None:
        return default
    if value not in TRUE | FALSE:
        raise BadRequest(text=f"field {var} must be a boolean")
    return value in TRUE


def parse_jid(value: str, var: str) -> JID:
    try:
        return JID.parse(value.strip())
    except InvalidJID:
        raise BadRequest(text=f"field {var}: {value!r} is not a valid JID") from None
