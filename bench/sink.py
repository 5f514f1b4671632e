"""A minimal SMTP sink: answers every command at once, keeps nothing but a count of the
messages and their distinct Message-IDs, which it writes to a stats file every 50 ms.

    python -m bench.sink --port 2525 --stats sink.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any, cast

_MESSAGE_ID = re.compile(rb"^Message-ID: *(<[^>]+>)", re.IGNORECASE | re.MULTILINE)


class Stats:
    def __init__(self) -> None:
        self.messages = 0
        self.ids: set[bytes] = set()
        self.first_at = 0.0
        self.last_at = 0.0

    def received(self, data: bytes) -> None:
        now = time.time()
        self.first_at = self.first_at or now
        self.last_at = now
        self.messages += 1
        found = _MESSAGE_ID.search(data)
        # without a Message-ID (the textbook sends none) every message counts as distinct
        self.ids.add(found.group(1) if found else str(self.messages).encode())


class Sink(asyncio.Protocol):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.buffer = b""
        self.in_data = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses
        self.transport = cast(Any, transport)
        self.transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies = []
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                self.stats.received(self.buffer[:end])
                self.buffer = self.buffer[end + 5 :]
                self.in_data = False
                replies.append(b"250 2.0.0 queued\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                break
            line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            verb = line[:4].upper()
            if verb == b"EHLO":
                replies.append(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
            elif verb == b"DATA":
                self.in_data = True
                replies.append(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                replies.append(b"221 bye\r\n")
                self.transport.write(b"".join(replies))
                self.transport.close()
                return
            else:
                replies.append(b"250 ok\r\n")
        if replies:
            self.transport.write(b"".join(replies))


async def report(stats: Stats, path: Path) -> None:
    while True:
        snapshot = {
            "messages": stats.messages,
            "distinct": len(stats.ids),
            "first_at": stats.first_at,
            "last_at": stats.last_at,
        }
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(snapshot))
        os.replace(temporary, path)
        await asyncio.sleep(0.05)


async def main(args: argparse.Namespace) -> None:
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Sink(stats), "127.0.0.1", args.port, backlog=1024)
    async with server:
        await report(stats, Path(args.stats))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stats", required=True)
    arguments = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(arguments))
    except ImportError:
        asyncio.run(main(arguments))
