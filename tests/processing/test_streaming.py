import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from skylapse.processing.streaming import SinkThread, prefetch


def test_prefetch_keeps_order_and_bounds_work_in_flight():
    started: list[int] = []
    lock = threading.Lock()
    consumed = 0

    def work(i: int) -> int:
        with lock:
            started.append(i)
            # never more than `depth` items ahead of what the consumer has taken
            assert i < consumed + 3 + 1
        time.sleep(0.001 * (i % 3))
        return i * i

    out = []
    with ThreadPoolExecutor(4) as pool:
        for r in prefetch(pool, work, range(40), depth=3):
            out.append(r)
            with lock:
                consumed += 1
    assert out == [i * i for i in range(40)]
    assert sorted(started) == list(range(40))


def test_prefetch_rejects_zero_depth():
    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError):
        list(prefetch(pool, abs, [1], depth=0))


def test_sink_thread_consumes_everything_in_order():
    seen = []
    sink = SinkThread(seen.append, maxsize=1)
    for i in range(100):
        sink.put(i)
    sink.close()
    assert seen == list(range(100))


def test_sink_thread_reraises_consumer_error():
    def consume(i):
        if i == 3:
            raise RuntimeError("encoder broke")

    sink = SinkThread(consume, maxsize=1)
    with pytest.raises(RuntimeError, match="encoder broke"):
        for i in range(50):
            sink.put(i)
        sink.close()
