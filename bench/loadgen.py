"""A closed-loop HTTP/1.1 load generator: C keep-alive connections, each sending the same
request again as soon as the answer arrives. Raw asyncio streams and pre-built bytes keep it
far cheaper per request than the servers it measures. Prints one JSON line of results.

    python -m bench.loadgen --port 8000 --connections 64 --seconds 10 --body body.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path


def build_request(*, path: str, body: bytes, token: str | None) -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        "Host: bench",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if token:
        head.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def connection(
    port: int, request: bytes, until: float, latencies: list[float], statuses: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def main(args: argparse.Namespace) -> None:
    body = Path(args.body).read_bytes()  # noqa: ASYNC240 (once, before any load)
    request = build_request(path=args.path, body=body, token=args.token)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    until = started + args.seconds
    await asyncio.gather(
        *(
            connection(args.port, request, until, latencies, statuses)
            for _ in range(args.connections)
        )
    )
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "requests": len(latencies),
                "statuses": statuses,
                "seconds": elapsed,
                "p50_ms": percentile(latencies, 0.50) * 1000,
                "p99_ms": percentile(latencies, 0.99) * 1000,
                "started_at": time.time() - elapsed,
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/notifications")
    parser.add_argument("--body", required=True)
    parser.add_argument("--token")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10)
    arguments = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(arguments))
    except ImportError:
        asyncio.run(main(arguments))
