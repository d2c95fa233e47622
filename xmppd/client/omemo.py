"""OMEMO (XEP-0384) for the bundled client, through slixmpp-omemo.

Both OMEMO versions are on: the legacy one of Conversations (eu.siacs.conversations.axolotl,
through `oldmemo`) and OMEMO 2 (urn:xmpp:omemo:2, through `twomemo`). The keys live in a
JSON file that the bot owns (written whole, atomically, at each change; mode 0600), and
new devices are trusted blindly until verified (BTBV), as bots usually want.

`OmemoPlugin` is registered in slixmpp's plugin registry as "xep_0384"; `Client.enable_omemo`
(xmppd/client/__init__.py) loads it.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import DeviceInformation, JSONType
from slixmpp.plugins.base import register_plugin
from slixmpp_omemo import XEP_0384, TrustLevel


class JsonFileStorage(Storage):
    """The OMEMO key store: one JSON document, rewritten on every change."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        self._data: dict[str, JSONType] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self._write_lock = asyncio.Lock()

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(self._data[key]) if key in self._data else Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self._data[key] = value
        await self._save()

    async def _delete(self, key: str) -> None:
        if self._data.pop(key, None) is not None:
            await self._save()

    async def _save(self) -> None:
        text = json.dumps(self._data)
        async with self._write_lock:
            await asyncio.to_thread(_write_private, self.path, text)


def _write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by its owner only, never half written."""
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


class OmemoPlugin(XEP_0384):
    """slixmpp-omemo with a JSON key file (`keys_path` in the plugin config) and BTBV."""

    default_config = {
        "fallback_message": "This message is OMEMO encrypted.",
        "keys_path": None,
    }

    def plugin_init(self) -> None:
        if not self.keys_path:
            raise ValueError("the OMEMO plugin needs keys_path: the file of the bot's keys")
        self._storage = JsonFileStorage(Path(self.keys_path))
        super().plugin_init()

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def _btbv_enabled(self) -> bool:
        return True

    async def _prompt_manual_trust(
        self, manually_trusted: frozenset[DeviceInformation], identifier: str | None
    ) -> None:
        """A bot has nobody to ask: devices of contacts that were verified before and
        show new keys stay undecided, so nothing is encrypted for them."""
        session_manager = await self.get_session_manager()
        for device in manually_trusted:
            await session_manager.set_trust(device.bare_jid, device.identity_key, TrustLevel.UNDECIDED.value)


register_plugin(OmemoPlugin, name="xep_0384")
