"""Named events with priorities (Prosody's module:hook vocabulary, see STYLE.md section 3).

Higher priority runs first; a handler returning a true value has handled the event and
stops the chain. Handlers are coroutines. A crash in a handler of a stanza event is left
to the caller (the router turns it into internal-server-error); `notify` logs a crash and
carries on, for past-tense notifications such as `resource-bound`.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[Any]]


class EventBus:
    def __init__(self):
        self._handlers: dict[str, list[tuple[float, int, Handler]]] = {}
        self._order = 0

    def hook(self, name: str, handler: Handler, priority: float = 0) -> None:
        chain = self._handlers.setdefault(name, [])
        self._order += 1
        # Sorted by (-priority, registration order): stable among equal priorities.
        bisect.insort(chain, (-priority, self._order, handler), key=lambda entry: entry[:2])

    def unhook(self, name: str, handler: Handler) -> None:
        chain = self._handlers.get(name, [])
        chain[:] = [entry for entry in chain if entry[2] != handler]
        if not chain:
            self._handlers.pop(name, None)

    def hooked(self, prefix: str) -> list[str]:
        """The events starting with `prefix` that have handlers (what the extensions offer)."""
        return [name for name in self._handlers if name.startswith(prefix)]

    async def fire(self, name: str, event: Any) -> bool:
        """Run the chain until a handler returns a true value; return whether one did."""
        chain = self._handlers.get(name)
        if not chain:
            return False
        for _, _, handler in tuple(chain):
            if await handler(event):
                return True
        return False

    async def notify(self, name: str, event: Any) -> None:
        """Run every handler of a notification; a crash is logged and the chain goes on."""
        for _, _, handler in tuple(self._handlers.get(name, ())):
            try:
                await handler(event)
            except Exception:
                log.exception(
                    "event=handler-crashed name=%s handler=%s", name, getattr(handler, "__qualname__", handler)
                )
