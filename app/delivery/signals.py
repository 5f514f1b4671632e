"""Process signals: stop starting new sends the moment SIGTERM or SIGINT arrives."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from app.delivery.worker import Worker


def stop_claiming_on_signals(worker: Worker) -> Callable[[], None]:
    """uvicorn lets open requests finish before the lifespan ends; without this the worker
    would keep starting new sends meanwhile. We chain onto the server's own handlers (and do
    nothing where there are none, as under a test runner). Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    chained: list[tuple[int, Callable[[int, FrameType | None], object]]] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous) or previous is signal.default_int_handler:
            continue

        def handler(
            number: int,
            frame: FrameType | None,
            previous: Callable[[int, FrameType | None], object] = previous,
        ) -> None:
            worker.stop_claiming()
            previous(number, frame)

        signal.signal(signum, handler)
        chained.append((signum, previous))

    def undo() -> None:
        for signum, previous in chained:
            signal.signal(signum, previous)

    return undo
