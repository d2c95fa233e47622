"""systemd service notifications (sd_notify(3), the datagram protocol, no libsystemd).

With `Type=notify` in the unit, systemd sets $NOTIFY_SOCKET: the server sends READY=1
once it serves, STOPPING=1 when a shutdown begins, and with `WatchdogSec=` (which sets
$WATCHDOG_USEC) WATCHDOG=1 every half of that interval while its event loop runs, so
that a hung server is restarted. Without $NOTIFY_SOCKET nothing is sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send `state` ("READY=1", lines joined by newlines) to the service manager; False
    when there is none to tell, or it could not be told."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):  # Linux abstract socket namespace
        address = "\0" + address[1:]
    elif not address.startswith("/"):  # not set, or a kind we do not speak (vsock)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)  # never stall the event loop on a full queue
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("event=systemd-notify-failed state=%s error=%s", state.split("\n", 1)[0], exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between two WATCHDOG=1, or None when systemd expects none from us."""
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    owner = os.environ.get("WATCHDOG_PID")
    if usec <= 0 or (owner and owner != str(os.getpid())):
        return None
    return usec / 2 / 1_000_000


async def watchdog(interval: float) -> None:
    """Keep telling systemd that the event loop runs; cancelled at the end of shutdown."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
