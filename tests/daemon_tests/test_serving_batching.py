"""Dynamic batching of concurrent ``/v1/predict`` requests: texts of requests that
arrive together reach the predictor in one call, each request gets back exactly its own
predictions, and a batch never exceeds its size limit or mixes two models."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from hpod.http.serving import BatchingPredictor, ServedModel


class _Recording:
    """A predictor that records the lists it is called with and answers ``tag:text``."""

    def __init__(self, tag: str, delay: float = 0.0) -> None:
        self.tag, self.delay = tag, delay
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    def predict(self, texts: Sequence[str]) -> list[str]:
        with self._lock:
            self.calls.append(list(texts))
        time.sleep(self.delay)
        return [f"{self.tag}:{t}" for t in texts]


def _served(predictor: Any) -> ServedModel:
    return ServedModel(selection={"study": "s", "trial": 0}, predictor=predictor, loaded_at=0.0)


def test_concurrent_requests_share_calls_and_get_their_own_answers() -> None:
    predictor = _Recording("m", delay=0.05)
    served = _served(predictor)
    batcher = BatchingPredictor(max_batch_texts=8, max_wait_seconds=0.5)

    async def main() -> list[list[str]]:
        requests = [[f"r{i}-a", f"r{i}-b"] for i in range(10)]
        return await asyncio.gather(*(batcher.predict(served, texts) for texts in requests))

    answers = asyncio.run(main())
    assert answers == [[f"m:r{i}-a", f"m:r{i}-b"] for i in range(10)]
    # 20 texts, at most 8 per call, requests never split: fewer calls than requests.
    assert all(len(call) <= 8 for call in predictor.calls)
    assert len(predictor.calls) < 10
    assert sorted(t for call in predictor.calls for t in call) == sorted(t for r in range(10) for t in
                                                                         (f"r{r}-a", f"r{r}-b"))


def test_a_request_larger_than_the_batch_is_served_alone_and_models_are_not_mixed() -> None:
    old, new = _Recording("old"), _Recording("new")
    batcher = BatchingPredictor(max_batch_texts=4, max_wait_seconds=0.2)

    async def main() -> list[list[str]]:
        return await asyncio.gather(batcher.predict(_served(old), ["a", "b", "c", "d", "e", "f"]),
                                    batcher.predict(_served(old), ["g"]),
                                    batcher.predict(_served(new), ["h"]))

    big, small, other = asyncio.run(main())
    assert big == [f"old:{t}" for t in "abcdef"] and small == ["old:g"] and other == ["new:h"]
    assert ["a", "b", "c", "d", "e", "f"] in old.calls
    assert all(call == ["h"] for call in new.calls)


def test_a_failing_predictor_fails_the_requests_of_its_batch_only() -> None:
    class Broken:
        def predict(self, texts: Sequence[str]) -> list[str]:
            raise RuntimeError("model exploded")

    batcher = BatchingPredictor(max_batch_texts=4, max_wait_seconds=0.0)

    async def main() -> None:
        with pytest.raises(RuntimeError, match="exploded"):
            await batcher.predict(_served(Broken()), ["x"])
        assert await batcher.predict(_served(_Recording("ok")), ["y"]) == ["ok:y"]

    asyncio.run(main())


@pytest.mark.parametrize(("kwargs", "message"), [({"max_batch_texts": 0, "max_wait_seconds": 0.01}, "max_batch"),
                                                 ({"max_batch_texts": 4, "max_wait_seconds": -1}, "max_wait")])
def test_bad_limits_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchingPredictor(**kwargs)


def test_a_lone_client_is_not_kept_waiting_for_itself() -> None:
    """One client sending requests one after another: only its first request (after a
    quiet spell, when others might join) waits out the batching wait; each later one
    starts its batch at once, since the previous batch answered only this client."""
    predictor = _Recording("m")
    # a wait far longer than a loaded machine's pause, so only the quiet-spell wait expires
    batcher = BatchingPredictor(max_batch_texts=8, max_wait_seconds=1.0)

    async def main() -> list[list[str]]:
        return [await batcher.predict(_served(predictor), [f"t{i}"]) for i in range(5)]

    assert asyncio.run(main()) == [[f"m:t{i}"] for i in range(5)]
    assert predictor.calls == [[f"t{i}"] for i in range(5)]
    assert batcher.waits_expired == 1


def test_a_batch_starts_once_the_clients_it_expects_are_back() -> None:
    """Four clients in step: the first batch waits out the wait (anyone might join),
    each later one starts as soon as the four clients the previous batch answered have
    sent their next request, not when the wait runs out."""
    predictor = _Recording("m", delay=0.01)
    batcher = BatchingPredictor(max_batch_texts=8, max_wait_seconds=1.0)
    served = _served(predictor)

    async def client(name: str) -> None:
        for i in range(5):
            assert await batcher.predict(served, [f"{name}{i}"]) == [f"m:{name}{i}"]

    async def main() -> None:
        await asyncio.gather(*(client(name) for name in "abcd"))

    asyncio.run(main())
    assert [len(call) for call in predictor.calls] == [4] * 5
    assert batcher.waits_expired == 1


def test_clients_that_started_apart_end_up_in_one_batch() -> None:
    """Two clients start, two more join while the first batch runs, and the model takes
    longer than the batching wait. When the first batch ends, the next one expects the
    pair it answered as well as the pair that queued meanwhile, so it waits (at most the
    batching wait) for the returning pair instead of running the queued pair alone and
    leaving the pairs to alternate, each request waiting for the other pair's batch."""
    predictor = _Recording("m", delay=0.6)
    batcher = BatchingPredictor(max_batch_texts=8, max_wait_seconds=0.3)
    served = _served(predictor)

    async def client(name: str, late: bool) -> None:
        if late:
            while not predictor.calls:  # the first batch has reached the predictor
                await asyncio.sleep(0.001)
        for i in range(4):
            assert await batcher.predict(served, [f"{name}{i}"]) == [f"m:{name}{i}"]

    async def main() -> None:
        await asyncio.gather(*(client(name, late=name in "cd") for name in "abcd"))

    asyncio.run(main())
    # a and b alone, then all four (a and b's last three, c and d's first three), then
    # c and d's last requests
    assert [len(call) for call in predictor.calls] == [2, 4, 4, 4, 2]
