"""Small helpers for the benchmark: free ports, waiting, and the memory of a process tree."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on, distinct from each other: all are held at once while chosen,
    since the system may hand a just-released port out again."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def free_port() -> int:
    return free_ports(1)[0]


def wait_until(check: Callable[[], bool], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {within:g} s for {what}")
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found += [int(child) for child in children]
    return found


def rss_mb(pid: int, *, peak: bool = False) -> float:
    """Resident memory of a process and its children (uvicorn's workers), in MB; with
    `peak`, each process's high-water mark (VmHWM)."""
    field = "VmHWM:" if peak else "VmRSS:"
    total = 0.0
    for process in [pid, *_children(pid)]:
        try:
            lines = Path(f"/proc/{process}/status").read_text().splitlines()
        except FileNotFoundError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith(field)) / 1024
    return total
