"""The keys in force: API_KEYS and the keys file's, swapped whole when the file is read again.

The file is read again on SIGHUP, or when a look at it (at most once a second, off the
request path) finds its modification time, size or inode changed, and the next look finds
them unchanged since: a file written in place is not read half-written. A file that cannot be
used then leaves the previous keys in force and the log says why; a request sees either the
old keys or the new ones, never a mix and never none.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from app.api.api_keys import ApiKey, identify
from app.api.callers import Caller
from app.api.keys_file import KeysFileError, combine, read_keys_file
from app.ops.logs import event
from app.settings import Settings

log = logging.getLogger("app.api.keyring")

WATCH_INTERVAL = 1.0

Signature = tuple[int, int, int] | None  # mtime (ns), size, inode; None: no file
_UNSEEN: Signature = (-1, -1, -1)  # no file has it: "no change pending", unlike None


class Keyring:
    def __init__(self, settings: Settings) -> None:
        """Raises KeysFileError (naming the line) when the keys file cannot be used."""
        self._settings = settings
        self._path = settings.api_keys_file
        self._seen = _signature(self._path) if self._path else None
        self._settling: Signature = _UNSEEN  # a change seen by the last look, not yet read
        self._keys = tuple(self._read())
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[bool]] = set()

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        return self._keys

    def identify(self, offered: str) -> Caller | None:
        return identify(self._keys, offered)

    def webhook_secrets(self, name: str) -> tuple[str, ...]:
        """What the webhooks of caller `name` are signed with: its keys' webhook_secret (one
        caller's keys all give the same), else WEBHOOK_SECRET's; empty if neither is set."""
        for key in self._keys:
            if key.name == name and key.caller.webhook_secrets:
                return key.caller.webhook_secrets
        return self._settings.webhook_secrets

    async def reload(self, why: str) -> bool:
        """Read the keys file again; True if its keys are now in force."""
        if self._path is None:
            return False
        async with self._lock:
            self._seen = await asyncio.to_thread(_signature, self._path)
            try:
                keys = await asyncio.to_thread(self._read)
                if not keys:
                    raise KeysFileError(
                        f"{self._path}: holds no key, and API_KEYS none: nobody could call"
                    )
            except KeysFileError as exc:
                event(
                    log,
                    "keys.reload_failed",
                    level=logging.ERROR,
                    why=why,
                    reason=str(exc),
                    hint="the previous keys stay in force until the file is fixed",
                )
                return False
            self._keys = tuple(keys)  # one assignment: requests see old or new, whole
        event(log, "keys.reloaded", why=why, keys=len(keys), callers=_names(keys))
        return True

    async def watch(self, interval: float = WATCH_INTERVAL) -> None:
        """Read the file again whenever it changes; runs until cancelled."""
        if self._path is None:
            return
        while True:
            await asyncio.sleep(interval)
            await self.look()

    async def look(self) -> None:
        """One look at the file: read it again if it changed, once it holds still. A file
        written in place passes through states that are valid TOML yet wrong: cut after a
        key's digest and before its limits, it gives that key none. So a change is read only
        when a look finds the file as the previous look did (a second or so later)."""
        if self._path is None:
            return
        now = await asyncio.to_thread(_signature, self._path)
        if now == self._seen:
            self._settling = _UNSEEN
        elif now != self._settling:
            self._settling = now  # changed since the last look: maybe still being written
        else:
            await self.reload("changed")

    def reload_soon(self) -> None:
        """For a signal handler: reload in a task of its own."""
        task = asyncio.get_running_loop().create_task(self.reload("SIGHUP"))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        """Watch the file and take SIGHUP while the block runs (SIGHUP only in the main
        thread, where signals arrive; uvicorn's own handlers are for other signals)."""
        if self._path is None:
            yield
            return
        loop = asyncio.get_running_loop()
        hup = threading.current_thread() is threading.main_thread()
        if hup:
            previous = signal.getsignal(signal.SIGHUP)
            loop.add_signal_handler(signal.SIGHUP, self.reload_soon)
        watcher = asyncio.create_task(self.watch())
        try:
            yield
        finally:
            watcher.cancel()
            with suppress(asyncio.CancelledError):
                await watcher
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
                signal.signal(signal.SIGHUP, signal.SIG_DFL if previous is None else previous)

    def _read(self) -> list[ApiKey]:
        settings = self._settings
        keys = list(settings.api_keys)
        if self._path is not None:
            keys += read_keys_file(
                self._path,
                allowed_senders=settings.allowed_senders,
                mail_from=settings.mail_from,
            )
        return combine(keys, source=f"API_KEYS and {self._path}")


def _signature(path: Path) -> Signature:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_mtime_ns, found.st_size, found.st_ino


def _names(keys: list[ApiKey]) -> str:
    return ",".join(sorted({key.name for key in keys}))
