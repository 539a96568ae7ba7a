"""Dynamic batching: concurrent requests share forward passes, a lone one waits on nobody,
and a batch never mixes versions."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from learners.model import Prediction
from services.serving import Batcher, Loaded, NotReady, status_of


class Slow:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[int] = []
        self.threads: set[str] = set()

    def predict(self, texts):
        self.calls.append(len(texts))
        self.threads.add(threading.current_thread().name)
        time.sleep(0.05)
        return [Prediction(f"{self.name}:{t}", {}) for t in texts]


def test_concurrent_requests_are_batched_and_keep_their_order():
    model = Slow("m")
    batcher = Batcher(lambda: Loaded(7, model), max_texts=64)

    async def run():
        return await asyncio.gather(*(batcher.predict([f"t{i}", f"u{i}"]) for i in range(20)))

    results = asyncio.run(run())
    for i, (version, preds) in enumerate(results):
        assert version == 7 and [p.label for p in preds] == [f"m:t{i}", f"m:u{i}"]
    assert len(model.calls) <= 3 and sum(model.calls) == 40  # not one forward per request
    assert model.threads == {"inference_0"}  # one inference thread


def test_a_batch_is_bounded_and_a_swap_applies_to_the_next_batch():
    models = {"current": Loaded(1, Slow("old"))}
    batcher = Batcher(lambda: models["current"], max_texts=10)

    async def run():
        first = asyncio.ensure_future(batcher.predict(["a"]))
        await asyncio.sleep(0.01)  # the first forward is running
        models["current"] = Loaded(2, Slow("new"))
        rest = await asyncio.gather(*(batcher.predict([f"x{i}"] * 4) for i in range(5)))
        return await first, rest

    first, rest = asyncio.run(run())
    assert first[0] == 1 and first[1][0].label == "old:a"
    assert {v for v, _ in rest} == {2}
    assert all(n <= 10 for n in models["current"].model.calls)


def test_no_model_is_a_503():
    batcher = Batcher(lambda: None, max_texts=10)
    with pytest.raises(NotReady) as err:  # a domain error: the HTTP layer answers it with 503
        asyncio.run(batcher.predict(["a"]))
    assert status_of(err.value) == 503
