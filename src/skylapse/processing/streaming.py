"""Small streaming tools the render pipeline is built from: bounded prefetch and a writer thread.

Frames flow through the pipeline one at a time; these keep the number of frames alive at once
bounded (so memory does not grow with the length of the sequence) while letting decoding and
encoding run on other cores than the processing itself.
"""

from __future__ import annotations

import enum
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import Any, Final, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch(
    executor: Executor, fn: Callable[[T], R], items: Iterable[T], depth: int
) -> Iterator[R]:
    """``map(fn, items)`` run ``depth`` items ahead on ``executor``, results in order.

    Unlike ``Executor.map``, which submits everything at once and so may hold every result in
    memory, at most ``depth`` results exist at a time.
    """
    if depth < 1:
        raise ValueError("depth must be at least 1")
    pending: deque[Future[R]] = deque()
    source = iter(items)
    for item in source:
        pending.append(executor.submit(fn, item))
        if len(pending) >= depth:
            break
    try:
        while pending:
            result = pending.popleft().result()
            nxt = next(source, _END)
            if nxt is not _END:
                pending.append(executor.submit(fn, nxt))
            yield result
    finally:
        for fut in pending:
            fut.cancel()


class _End(enum.Enum):
    """The end-of-stream marker, a type of its own so that ``item is _END`` narrows ``T | _End``."""

    END = enum.auto()


_END: Final = _End.END


class SinkThread(Generic[T]):
    """Feeds items to ``consume`` on its own thread through a bounded queue.

    ``put`` blocks while the queue is full, which is the back-pressure that keeps a fast
    producer from piling frames up in front of a slow encoder. An exception in ``consume`` is
    re-raised in the producer on the next ``put`` or on ``close``.
    """

    def __init__(self, consume: Callable[[T], Any], *, maxsize: int = 2, name: str = "sink"):
        self._consume = consume
        self._queue: queue.Queue[T | _End] = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._error is not None:
                continue  # drain so the producer never blocks forever
            try:
                self._consume(item)
            except BaseException as exc:  # re-raised in the producer
                self._error = exc

    def put(self, item: T) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def close(self) -> None:
        """Wait until every queued item is consumed; re-raise the consumer's error if any."""
        self._queue.put(_END)
        self._thread.join()
        if self._error is not None:
            raise self._error
