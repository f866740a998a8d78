"""The engine's scheduler is touched by its step thread alone: ``stats()`` (called from the replica's event
loop, for heartbeats and Serve's metrics) reads the snapshot the step thread publishes."""

from __future__ import annotations

import threading

from ossfleet.engine.base import EngineRequest, SamplingParams
from ossfleet.engine.batched import local_engine


class Watched:
    """Passes attribute reads through to the scheduler, noting the thread of each."""

    def __init__(self, inner, threads: set[str]) -> None:
        self.__dict__["_inner"], self.__dict__["_threads"] = inner, threads

    def __getattr__(self, name):
        self._threads.add(threading.current_thread().name)
        return getattr(self._inner, name)


async def test_stats_read_the_published_snapshot_never_the_scheduler(tiny_checkpoint):
    engine = local_engine(str(tiny_checkpoint), [(0, 2)], max_batch_size=2)
    threads: set[str] = set()
    engine.scheduler = Watched(engine.scheduler, threads)
    await engine.start()
    try:
        assert engine.stats().running == 0
        request = EngineRequest("r", [1, 2, 3], SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
        during = []
        async for out in engine.generate(request):
            during.append((engine.stats().running, out.finished))
        assert during[0] == (1, False)  # the step that gave the first token published the running request
        assert engine.stats().running == 0 and engine.stats().waiting == 0
    finally:
        await engine.stop()
    assert threads == {"ossfleet-engine"}
