"""The micro-batched engine: one model in-process, or gpt-oss-120b as a pipeline of stage actors.

Requests are grouped into micro-batches. A micro-batch is prefilled together
(left-padded, with the attention mask and per-row positions ``generate`` uses)
and decoded step by step; a row that finishes leaves its micro-batch at the
next step (its KV rows are dropped on every stage), and its slot goes to the
next micro-batch that forms. Up to ``micro_batches`` micro-batches are in
flight at once: on a pipeline, while stage 2 runs micro-batch A's step, stage
1 runs micro-batch B's, so every stage stays busy.

Why our own batching rather than transformers' ``ContinuousBatchingManager``
(which ``engine/hf.py`` wraps for the single-model role): the manager owns the
whole forward pass, so it cannot run a model cut into stages on different
actors; and it samples with one global generator, so a request's ``seed``
cannot make its tokens reproducible. This engine does both, and its greedy
tokens equal ``generate``'s exactly (tested for 1, 2 and 3 stages).

Each micro-batch decodes on a thread of its own (outputs reach the event
loop once per step): handing every step to a thread from asyncio cost a third
of the single-request speed on CPU, and it keeps the replica's Redis I/O
responsive while a forward pass runs.

A new request joins at micro-batch granularity, not token granularity: it
waits for a micro-batch slot (at most one micro-batch's lifetime under full
load). That is the price of static KV shapes per micro-batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ossfleet.engine.base import EngineError, EngineRequest, EngineStats, ThroughputMeter, TokenOutput
from ossfleet.engine.sampling import generator_for, sample


class StageExecutor(Protocol):
    """Runs one step of a micro-batch through every stage, returning last-position logits.

    Called from the micro-batch's own thread; it may block.
    """

    def step(
        self, batch_id: int, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, keep: list[int] | None
    ) -> torch.Tensor: ...

    def release(self, batch_id: int) -> None: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Stages in this process, one forward at a time (they share the device)."""

    def __init__(self, stages: Sequence[Any]) -> None:
        self.stages = list(stages)
        self._lock = threading.Lock()

    def step(
        self, batch_id: int, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, keep: list[int] | None
    ) -> torch.Tensor:
        with self._lock:
            h = x
            for s in self.stages:
                h = s.forward(batch_id, h, mask, pos, keep)
            return h

    def release(self, batch_id: int) -> None:
        with self._lock:
            for s in self.stages:
                s.release(batch_id)

    def close(self) -> None:
        self.stages = []


class RayExecutor:
    """Stages as Ray actors; activations go actor to actor as Ray objects, never through the driver.

    Each actor runs its calls in order, so while stage 2 works on one
    micro-batch's step, stage 1 is free for the next micro-batch's.
    """

    def __init__(self, actors: Sequence[Any]) -> None:
        self.actors = list(actors)

    def step(
        self, batch_id: int, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, keep: list[int] | None
    ) -> torch.Tensor:
        import ray

        ref: Any = x
        for a in self.actors:
            ref = a.forward.remote(batch_id, ref, mask, pos, keep)
        return ray.get(ref)

    def release(self, batch_id: int) -> None:
        import ray

        ray.get([a.release.remote(batch_id) for a in self.actors])

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []


@dataclass
class _Row:
    request: EngineRequest
    out: asyncio.Queue[TokenOutput]
    gen: torch.Generator
    generated: int = 0
    aborted: bool = False


@dataclass
class _MicroBatch:
    id: int
    rows: list[_Row]
    width: int = 0  # tokens per row in its KV cache (padded prompt + generated)


class BatchedEngine:
    def __init__(
        self,
        executor: StageExecutor,
        *,
        max_batch_size: int = 8,
        micro_batches: int = 1,
        max_context: int = 4096,
        pad_id: int = 0,
        torch_threads: int | None = None,
    ) -> None:
        if micro_batches < 1 or micro_batches > max_batch_size:
            raise EngineError(f"micro_batches must lie in [1, max_batch_size={max_batch_size}]")
        self.executor = executor
        self.max_slots = max_batch_size
        self.micro_batches = micro_batches
        self.max_context = max_context
        self.pad_id = pad_id
        self._waiting: list[_Row] = []
        self._active: dict[int, _MicroBatch] = {}
        self._rows: dict[str, _Row] = {}
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        # torch's intra-op thread count is per calling thread: set it on ours.
        threads = torch_threads or torch.get_num_threads()
        self._pool = ThreadPoolExecutor(
            max_workers=micro_batches, thread_name_prefix="ossfleet-mb", initializer=torch.set_num_threads,
            initargs=(threads,),
        )  # fmt: skip
        self._loop: asyncio.AbstractEventLoop | None = None
        self._meter = ThroughputMeter()
        self._failed: str | None = None
        self._stopping = False

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._scheduler = asyncio.create_task(self._schedule())

    async def stop(self) -> None:
        self._stopping = True
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        for row in list(self._rows.values()):
            row.aborted = True
        await asyncio.to_thread(self._pool.shutdown, True)
        await asyncio.to_thread(self.executor.close)

    def healthy(self) -> bool:
        return self._failed is None and self._scheduler is not None and not self._scheduler.done()

    # -- the Engine interface -------------------------------------------------------------------

    def free_slots(self) -> int:
        return self.max_slots - len(self._rows)

    def stats(self) -> EngineStats:
        """``kv_cache_used``: tokens held in KV caches over the engine's token capacity (slots x context)."""
        active = list(self._active.values())
        running = sum(len(mb.rows) for mb in active)
        held = sum(len(mb.rows) * mb.width for mb in active)
        kv = held / (self.max_slots * self.max_context)
        return EngineStats(running, len(self._waiting), self.max_slots, kv, self._meter.rate(time.monotonic()))

    def abort(self, request_id: str) -> None:
        row = self._rows.get(request_id)
        if row is None:
            return
        row.aborted = True  # a running row leaves at its micro-batch's next step
        if row in self._waiting:
            self._waiting.remove(row)
            self._deliver([(row, TokenOutput([], True, "abort"))])

    async def generate(self, request: EngineRequest) -> AsyncIterator[TokenOutput]:
        n = len(request.prompt_ids)
        if n == 0:
            raise EngineError("the prompt is empty")
        if n + request.sampling.max_tokens > self.max_context:
            raise EngineError(
                f"prompt ({n} tokens) + max_tokens ({request.sampling.max_tokens}) exceed the model's context "
                f"({self.max_context})"
            )
        if self._failed:
            raise EngineError(f"the engine failed: {self._failed}")
        row = _Row(request, asyncio.Queue(), generator_for(request.sampling))
        self._rows[request.request_id] = row
        self._waiting.append(row)
        self._wake.set()
        while True:
            item = await row.out.get()
            yield item
            if item.finished:
                return

    # -- scheduling (event loop) ------------------------------------------------------------------

    def _deliver(self, outputs: list[tuple[_Row, TokenOutput]]) -> None:
        for row, out in outputs:
            row.out.put_nowait(out)
            if out.finished:
                self._rows.pop(row.request.request_id, None)

    async def _schedule(self) -> None:
        cap = max(1, self.max_slots // self.micro_batches)
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting and len(self._active) < self.micro_batches:
                rows, self._waiting = self._waiting[:cap], self._waiting[cap:]
                mb = _MicroBatch(next(self._ids), rows)
                self._active[mb.id] = mb
                fut = loop.run_in_executor(self._pool, self._run, mb)
                fut.add_done_callback(functools.partial(self._done, mb.id))

    def _done(self, mb_id: int, _future: object = None) -> None:
        self._active.pop(mb_id, None)
        self._wake.set()

    # -- one micro-batch (its own thread) ----------------------------------------------------------

    def _emit(self, outputs: list[tuple[_Row, TokenOutput]]) -> None:
        if outputs and self._loop is not None:
            self._loop.call_soon_threadsafe(self._deliver, outputs)

    def _run(self, mb: _MicroBatch) -> None:
        try:
            prompts = [r.request.prompt_ids for r in mb.rows]
            width = max(len(p) for p in prompts)
            x = torch.tensor([[self.pad_id] * (width - len(p)) + list(p) for p in prompts], dtype=torch.long)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
            pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
            keep: list[int] | None = None
            while mb.rows:
                mb.width = mask.shape[1]
                logits = self.executor.step(mb.id, x, mask, pos, keep)
                tokens = sample(logits, [r.request.sampling for r in mb.rows], [r.gen for r in mb.rows])
                self._meter.add(time.monotonic(), len(tokens))
                outputs: list[tuple[_Row, TokenOutput]] = []
                alive: list[int] = []
                for i, (row, tok) in enumerate(zip(mb.rows, tokens, strict=True)):
                    row.generated += 1
                    if row.aborted or self._stopping:
                        outputs.append((row, TokenOutput([], True, "abort")))
                    elif tok in row.request.stop_token_ids:
                        outputs.append((row, TokenOutput([tok], True, "stop")))
                    elif row.generated >= row.request.sampling.max_tokens:
                        outputs.append((row, TokenOutput([tok], True, "length")))
                    else:
                        outputs.append((row, TokenOutput([tok])))
                        alive.append(i)
                self._emit(outputs)
                keep = alive if len(alive) < len(mb.rows) else None
                mb.rows = [mb.rows[i] for i in alive]
                if not mb.rows:
                    break
                x = torch.tensor([[tokens[i]] for i in alive], dtype=torch.long)
                if keep is not None:
                    mask, pos = mask[keep], pos[keep]
                mask = torch.cat([mask, torch.ones(len(alive), 1, dtype=torch.long)], dim=-1)
                pos = pos[:, -1:] + 1
        except Exception as e:  # a stage failed: fail this micro-batch's rows and report unhealthy
            self._failed = f"{type(e).__name__}: {e}"
            self._emit([(row, TokenOutput([], True, None, self._failed)) for row in mb.rows])
        finally:
            with contextlib.suppress(Exception):
                self.executor.release(mb.id)


def local_engine(path: str, stage_ranges: Sequence[tuple[int, int]], **kw: Any) -> BatchedEngine:
    """A BatchedEngine over in-process stages (``[(0, layers)]`` for the whole model)."""
    from ossfleet.engine.stages import PipelineStage

    dtype = kw.pop("dtype", "float32")
    device = kw.pop("device", "cpu")
    stages = [PipelineStage(path, a, b, dtype=dtype, device=device) for a, b in stage_ranges]
    return BatchedEngine(LocalExecutor(stages), **kw)


def ray_stage_actors(
    path: str,
    stage_ranges: Sequence[tuple[int, int]],
    placement_group: Any,
    *,
    first_bundle: int = 0,
    num_gpus: float = 1.0,
    num_cpus: float = 1.0,
    dtype: str = "float32",
    device: str = "cpu",
) -> list[Any]:
    """One stage actor per bundle of ``placement_group``, stage i in bundle ``first_bundle + i``."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from ossfleet.engine.stages import PipelineStage

    remote: Any = ray.remote(PipelineStage)
    actors = []
    for i, (a, b) in enumerate(stage_ranges):
        strategy = PlacementGroupSchedulingStrategy(
            placement_group=placement_group, placement_group_bundle_index=first_bundle + i
        )
        opts = {"num_gpus": num_gpus, "num_cpus": num_cpus, "scheduling_strategy": strategy}
        actors.append(remote.options(**opts).remote(path, a, b, dtype=dtype, device=device))
    # Fail fast (with the actor's own error) if a stage cannot load.
    ray.get([act.layer_range.remote() for act in actors])
    return actors
