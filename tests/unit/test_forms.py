"""XEP-0004 data forms: building, reading submissions, validating them."""

import pytest
from lxml import etree

from xmppd import forms
from xmppd.forms import Field
from xmppd.protocol.errors import BadRequest

NS = forms.NS_DATA


def submission(fields: str, type_: str = "submit") -> etree._Element:
    return etree.fromstring(f"<x xmlns='{NS}' type='{type_}'>{fields}</x>")


def test_build_puts_form_type_first_and_writes_every_part():
    x = forms.build(
        "form",
        title="Adding a User",
        instructions="line one\nline two",
        form_type="urn:test",
        fields=[
            Field("accountjid", "jid-single", "The JID", required=True),
            Field("max", "list-single", "Most", ("25",), options=("25", ("none", "None"))),
            Field("note", "fixed", values=("read me",), desc="why"),
        ],
    )
    assert x.tag == f"{{{NS}}}x" and x.get("type") == "form"
    assert x.findtext(f"{{{NS}}}title") == "Adding a User"
    assert [i.text for i in x.findall(f"{{{NS}}}instructions")] == ["line one", "line two"]
    fields = x.findall(f"{{{NS}}}field")
    assert fields[0].get("var") == "FORM_TYPE" and fields[0].get("type") == "hidden"
    assert forms.form_type_of(x) == "urn:test"
    assert fields[1].find(f"{{{NS}}}required") is not None and fields[1].get("label") == "The JID"
    options = fields[2].findall(f"{{{NS}}}option")
    assert [(o.get("label"), o.findtext(f"{{{NS}}}value")) for o in options] == [(None, "25"), ("None", "none")]
    assert fields[2].findtext(f"{{{NS}}}value") == "25"
    assert fields[3].findtext(f"{{{NS}}}desc") == "why"


def test_build_a_table():
    x = forms.build(
        "result",
        reported=[Field("jid", None, "JID")],
        items=[[Field("jid", None, values=("a@b",))], [Field("jid", None, values=("c@d",))]],
    )
    assert x.find(f"{{{NS}}}reported/{{{NS}}}field").get("var") == "jid"
    assert [i.findtext(f"{{{NS}}}field/{{{NS}}}value") for i in x.findall(f"{{{NS}}}item")] == ["a@b", "c@d"]


def test_parse_reads_every_value():
    data = forms.parse(
        submission(
            "<field var='FORM_TYPE'><value>urn:test</value></field>"
            "<field var='lines'><value>one</value><value/><value>three</value></field>"
            "<field var='empty'/>"
        ),
        form_type="urn:test",
    )
    assert data == {"FORM_TYPE": ["urn:test"], "lines": ["one", "", "three"], "empty": []}
    assert forms.text(data, "lines") == "one\n\nthree"


@pytest.mark.parametrize(
    "xml,kwargs",
    [
        ("<x xmlns='jabber:x:data' type='form'/>", {}),  # not a submission
        ("<x xmlns='urn:other' type='submit'/>", {}),  # not a data form
        (f"<x xmlns='{NS}' type='submit'><field><value>1</value></field></x>", {}),  # no var
        (f"<x xmlns='{NS}' type='submit'><field var='a'/><field var='a'/></x>", {}),  # twice
        (
            f"<x xmlns='{NS}' type='submit'><field var='FORM_TYPE'><value>urn:x</value></field></x>",
            {"form_type": "urn:test"},
        ),
    ],
)
def test_parse_refuses_malformed_submissions(xml, kwargs):
    with pytest.raises(BadRequest):
        forms.parse(etree.fromstring(xml), **kwargs)


def test_find_by_form_type():
    parent = etree.fromstring(
        f"<command xmlns='urn:c'><x xmlns='{NS}' type='submit'/>"
        f"<x xmlns='{NS}' type='submit'><field var='FORM_TYPE'><value>urn:b</value></field></x></command>"
    )
    assert forms.find(parent) is parent[0]
    assert forms.find(parent, "urn:b") is parent[1]
    assert forms.find(parent, "urn:c") is None


OFFERED = [
    Field("jid", "jid-single", required=True),
    Field("flag", "boolean"),
    Field("size", "list-single", options=("1", "2")),
    Field("jids", "jid-multi"),
]


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"jid": [" "]},
        {"jid": ["not a jid@"]},
        {"jid": ["a@b", "c@d"]},
        {"jid": ["a@b"], "flag": ["yes"]},
        {"jid": ["a@b"], "size": ["3"]},
        {"jid": ["a@b"], "jids": ["x@y", "@bad"]},
    ],
)
def test_check_refuses_what_the_form_does_not_allow(data):
    with pytest.raises(BadRequest):
        forms.check(data, OFFERED)


def test_check_accepts_a_good_submission_and_readers_convert():
    data = {"jid": ["a@b"], "flag": ["1"], "size": ["2"], "jids": ["x@y", "z@y"], "extra": ["ignored"]}
    forms.check(data, OFFERED)
    assert forms.single(data, "jid") == "a@b"
    assert forms.single(data, "missing", "default") == "default"
    assert forms.boolean(data, "flag", False) is True
    assert forms.boolean(data, "missing", True) is True
    with pytest.raises(BadRequest):
        forms.single(data, "jids")
