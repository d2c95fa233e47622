"""Structured logs: one line per event, key=value text or JSON; never bodies or secrets."""
from __future__ import annotations

import json
import logging
import sys
import time


class KeyValueFormatter(logging.Formatter):
    def format(self, record):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"time={stamp} level={record.levelname.lower()} logger={record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {"time": record.created, "level": record.levelname.lower(), "logger": record.name}
        for part in record.getMessage().split(" "):
            key, sep, value = part.partition("=")
            if sep:
                entry[key] = value
            else:
                entry.setdefault("message", "")
                entry["message"] = (entry["message"] + " " + part).strip()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
