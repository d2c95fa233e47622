"""XEP-0363 from the client's side, for the upload tests: slot requests as raw iqs (so
that bad ones can be sent too), PUT and GET with aiohttp, and the server's memory."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import aiohttp
from slixmpp.exceptions import IqError

NS_UPLOAD = "urn:xmpp:http:upload:0"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
KiB = 1024
MiB = 1024 * KiB


@dataclass
class Slot:
    put_url: str
    headers: dict[str, str]  # the <header/> elements
    get_url: str


class SlotRefused(Exception):
    def __init__(self, iq):
        self.iq = iq.xml
        error = self.iq.find("{jabber:client}error")
        self.type = error.get("type")
        self.condition = next(
            child.tag.split("}")[1]
            for child in error
            if child.tag.startswith(f"{{{NS_STANZAS}}}") and not child.tag.endswith("}text")
        )
        super().__init__(f"{self.condition} ({self.type})")

    def find(self, path: str):
        return self.iq.find(f"{{jabber:client}}error/{path}")


async def request_slot(
    client, service: str, filename: str | None, size, content_type: str | None = None, **extra: str
) -> Slot:
    """A slot from `service`; SlotRefused with the error when there is none. None leaves
    an attribute out."""
    iq = client.make_iq_get(ito=service)
    attributes = {
        "filename": filename,
        "size": None if size is None else str(size),
        "content-type": content_type,
        **extra,
    }
    iq.xml.append(ET.Element(f"{{{NS_UPLOAD}}}request", {k: v for k, v in attributes.items() if v is not None}))
    try:
        answer = await iq.send(timeout=10)
    except IqError as error:
        raise SlotRefused(error.iq) from None
    slot = answer.xml.find(f"{{{NS_UPLOAD}}}slot")
    put = slot.find(f"{{{NS_UPLOAD}}}put")
    headers = {h.get("name"): h.text for h in put.findall(f"{{{NS_UPLOAD}}}header")}
    return Slot(put.get("url"), headers, slot.find(f"{{{NS_UPLOAD}}}get").get("url"))


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def http() -> aiohttp.ClientSession:
    """A client for the server's HTTPS (self-signed certificate) and the S3 store; it
    does not decompress, so tests see what the server sent."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False), auto_decompress=False)


async def put(
    session, slot: Slot, data: bytes, content_type: str | None = "application/octet-stream", **headers: str
) -> aiohttp.ClientResponse:
    """PUT as a client does: Content-Length, Content-Type and the slot's headers."""
    sent = {"Content-Length": str(len(data)), **slot.headers, **headers}
    if content_type is not None:
        sent["Content-Type"] = content_type
    async with session.put(slot.put_url, data=data, headers=sent) as response:
        await response.read()
        return response


async def upload(
    client,
    service: str,
    session,
    data: bytes,
    filename: str = "file.bin",
    content_type: str = "application/octet-stream",
) -> Slot:
    slot = await request_slot(client, service, filename, len(data), content_type)
    response = await put(session, slot, data, content_type)
    assert response.status in (200, 201), (response.status, await response.text())
    return slot


async def download(session, url: str, **headers: str) -> tuple[aiohttp.ClientResponse, bytes]:
    async with session.get(url, headers=headers, allow_redirects=True) as response:
        return response, await response.read()


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


def reset_peak_memory(pid: int) -> None:
    """Linux: start VmHWM again from the current RSS (proc(5), clear_refs "5")."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
