"""Structured logs: one line per event, key=value text (logfmt) or JSON; never bodies or secrets.

A log call names its event and fields in the format string, each field's value one
%-argument:

    log.info("event=hibernating jid=%s unacked=%d", session.jid, len(queue))

The formatters read the fields back from the format string, so a value may hold spaces,
quotes or newlines and still stays one field of one line (text quotes it as JSON does;
exceptions too). Words of other loggers' messages go to `msg`. Stanzas are logged
through `redacted()`, which keeps element names and attributes and drops every text: no
message body, password or key material reaches a log.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import sys
import time

from lxml import etree

_KEY = re.compile(r"[A-Za-z_][\w.-]*")
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[a-zA-Z%]")
_PLAIN_VALUE = re.compile(r'[^\s"=\\]+')
REDACTED_LENGTH = 400  # characters of a redacted stanza kept in a log line


def redacted(element: etree._Element) -> str:
    """`element` as XML with every text node dropped: names and attributes only."""
    bare = copy.deepcopy(element)
    for node in bare.iter():
        node.text = None
        node.tail = None
    return etree.tostring(bare, encoding=str)[:REDACTED_LENGTH]


def fields(record: logging.LogRecord) -> dict[str, str]:
    """The record's message as an ordered dict of fields; words that are not key=value
    pairs are joined under "msg"."""
    message = str(record.msg)
    args = record.args if isinstance(record.args, tuple) else None
    if not args:
        if record.args:  # a mapping: logging's %(name)s style
            message = record.getMessage()
        return _split(message, ())
    try:
        return _split(message, args)
    except (TypeError, ValueError):  # arguments that do not fit: the message as logging makes it
        return {"msg": record.getMessage()}


def _split(message: str, args: tuple) -> dict[str, str]:
    entry: dict[str, str] = {}
    words = []
    position = 0
    for token in message.split(" "):
        wanted = sum(1 for p in _PLACEHOLDER.findall(token) if p != "%%") if args else 0
        values = args[position : position + wanted]
        if len(values) != wanted:
            raise ValueError("not enough arguments")
        position += wanted
        key, sep, template = token.partition("=")
        if sep and _KEY.fullmatch(key):
            entry[key] = template % values if args else template
        elif token:
            words.append(token % values if args else token)
    if position != len(args):
        raise ValueError("too many arguments")
    if words:
        entry["msg"] = " ".join(words)
    return entry


def _stamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _entry(formatter: logging.Formatter, record: logging.LogRecord) -> dict[str, str]:
    entry = {"time": _stamp(record), "level": record.levelname.lower(), "logger": record.name}
    for key, value in fields(record).items():
        entry.setdefault(key, value)
    if record.exc_info:
        entry["exception"] = formatter.formatException(record.exc_info)
    if record.stack_info:
        entry["stack"] = formatter.formatStack(record.stack_info)
    return entry


class KeyValueFormatter(logging.Formatter):
    """logfmt: key=value, a value quoted (JSON string escapes) when it needs to be."""

    def format(self, record):
        return " ".join(f"{key}={_quote(value)}" for key, value in _entry(self, record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record):
        return json.dumps(_entry(self, record), ensure_ascii=False)


def _quote(value: str) -> str:
    if value.isprintable() and _PLAIN_VALUE.fullmatch(value):
        return value
    return json.dumps(value, ensure_ascii=False)


def setup(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
