"""ossfleet's engine: a step loop over the scheduler, in-process or over a pipeline of stage actors.

Every step, :class:`~ossfleet.engine.scheduler.Scheduler` decides which
requests advance and by how many tokens (decode one token, prefill a chunk);
the executor runs that plan through the stages as one packed forward (the
stages hold a paged KV cache, ``engine/kvcache.py``); the engine samples each
request's next token with the request's own generator, and the scheduler folds
the tokens back. A request joins the running batch at the next step, and one
that finishes or is aborted leaves at once, so no request waits for another
to finish.

The loop runs on a thread of its own (one forward at a time per plan in
flight), so the replica's event loop and its Redis I/O stay responsive while
a forward pass runs; outputs reach the event loop once per step. On a
pipeline of S stages (``RayExecutor``) the loop keeps S plans in flight:
while stage 2 runs one group's step, stage 1 runs the next group's.

Why not transformers' ``ContinuousBatchingManager`` (which ``engine/hf.py``
wraps as a baseline): the manager owns the whole forward pass, so it cannot
run a model cut into stages on different actors; it samples with one global
generator, so a request's ``seed`` cannot make its tokens reproducible; and
it has no priorities or preemption. This engine does all three, and its
greedy tokens equal ``generate``'s exactly (tested for 1, 2 and 3 stages,
with requests joining mid-way and across preemption).
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ossfleet.engine.base import (
    GRAMMAR_DEAD_END,
    EngineError,
    EngineRefused,
    EngineRequest,
    EngineStats,
    ThroughputMeter,
    TokenLogprob,
    TokenOutput,
)
from ossfleet.engine.executors import LocalExecutor, StageExecutor
from ossfleet.engine.kvcache import StepBatch
from ossfleet.engine.sampling import constrain, drawable, generator_for, sample, token_logprob
from ossfleet.engine.scheduler import Chunk, Scheduler, SchedulerConfig, SeqOutput, SeqParams, StepPlan, fits

SAMPLING_FAILED = "sampling failed for this request's parameters (the request failed alone)"
NOT_A_DISTRIBUTION = (
    "the model produced no distribution to sample from for this request (NaN or no finite logits: its adapter's "
    "weights, say); the request failed alone"
)


@dataclass(frozen=True)
class _Snapshot:
    running: int
    waiting: int
    used_blocks: int


@dataclass
class _Row:
    request: EngineRequest
    out: asyncio.Queue[TokenOutput]
    gen: torch.Generator


class BatchedEngine:
    """The :class:`~ossfleet.engine.base.Engine` over a scheduler and stage executor."""

    def __init__(
        self,
        executor: StageExecutor,
        *,
        max_batch_size: int = 8,
        micro_batches: int = 1,
        max_context: int = 4096,
        torch_threads: int | None = None,
        kv_cache_tokens: int | None = None,
        block_size: int = 16,
        max_step_tokens: int = 512,
        max_prefill_chunk: int | None = None,
    ) -> None:
        if micro_batches < 1 or micro_batches > max_batch_size:
            raise EngineError(f"micro_batches must lie in [1, max_batch_size={max_batch_size}]")
        self.executor = executor
        self.max_slots = max_batch_size
        self.max_context = max_context
        tokens = kv_cache_tokens if kv_cache_tokens is not None else max_batch_size * max_context
        self.config = SchedulerConfig(
            max_slots=max_batch_size, num_blocks=max(1, math.ceil(tokens / block_size)), block_size=block_size,
            max_step_tokens=max_step_tokens, max_prefill_chunk=max_prefill_chunk or max_step_tokens,
            in_flight=micro_batches,
        )  # fmt: skip
        self.scheduler = Scheduler(self.config)  # touched by the step thread only (stats() reads its snapshot)
        self._snapshot = _Snapshot(0, 0, 0)
        self._rows: dict[str, _Row] = {}
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._threads = torch_threads or torch.get_num_threads()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._meter = ThroughputMeter()
        self._failed: str | None = None
        self._stopping = False
        self.steps = 0
        self.kv_cache_bytes = 0
        self.adapters: dict[str, int] = {}  # loaded LoRA adapters -> bytes held over all stages

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.kv_cache_bytes = await asyncio.to_thread(
            self.executor.init_cache, self.config.num_blocks, self.config.block_size
        )
        self._thread = threading.Thread(target=self._run, name="ossfleet-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stopping = True
        self._inbox.put(("stop", None))
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        self._deliver([SeqOutput(rid, (), True, "abort") for rid in list(self._rows)])
        await asyncio.to_thread(self.executor.close)

    def healthy(self) -> bool:
        return self._failed is None and self._thread is not None and self._thread.is_alive()

    # -- the Engine interface -------------------------------------------------------------------

    def free_slots(self) -> int:
        return self.max_slots - len(self._rows)

    def stats(self) -> EngineStats:
        """From the snapshot the step thread last published (never the scheduler itself, which only the step
        thread touches). ``kv_cache_used``: KV blocks held by requests over the blocks the cache has."""
        s = self._snapshot
        kv = s.used_blocks / self.config.num_blocks
        return EngineStats(s.running, s.waiting, self.max_slots, kv, self._meter.rate(time.monotonic()))

    async def load_adapter(self, key: str, config: dict[str, Any], data: bytes) -> None:
        """Load a LoRA adapter (PEFT's config and safetensors bytes) so requests may name it as ``adapter``.

        Runs beside the step loop: a stage takes it between two forwards (a Ray actor runs its calls in
        order; an in-process stage's step reads only the adapters of the requests in it).
        """
        self.adapters[key] = await asyncio.to_thread(self.executor.add_adapter, key, config, data)

    async def unload_adapter(self, key: str) -> None:
        """Free an adapter no running request uses (the caller's LRU knows which)."""
        if self.adapters.pop(key, None) is not None:
            await asyncio.to_thread(self.executor.remove_adapter, key)

    def abort(self, request_id: str) -> None:
        if request_id in self._rows:
            self._inbox.put(("abort", request_id))

    async def generate(self, request: EngineRequest) -> AsyncIterator[TokenOutput]:
        n = len(request.prompt_ids)
        sp = request.sampling
        if n == 0:
            raise EngineRefused("the prompt is empty")
        if n + sp.max_tokens > self.max_context:
            raise EngineRefused(
                f"prompt ({n} tokens) + max_tokens ({sp.max_tokens}) exceed the model's context ({self.max_context})"
            )
        if not fits(self.config, n, sp.max_tokens):
            raise EngineError(
                f"prompt ({n} tokens) + max_tokens ({sp.max_tokens}) exceed this replica's KV cache "
                f"({self.config.num_blocks * self.config.block_size} tokens)"
            )
        if self._failed:
            raise EngineError(f"the engine failed: {self._failed}")
        if request.request_id in self._rows:
            raise EngineError(f"request {request.request_id!r} is already running")
        if request.adapter is not None and request.adapter not in self.adapters:
            raise EngineError(f"adapter {request.adapter!r} is not loaded on this engine")
        row = _Row(request, asyncio.Queue(), generator_for(sp))
        self._rows[request.request_id] = row
        params = SeqParams(
            max_tokens=sp.max_tokens, stop_token_ids=frozenset(request.stop_token_ids), min_tokens=sp.min_tokens,
            ignore_eos=sp.ignore_eos, priority=request.priority,
        )  # fmt: skip
        self._inbox.put(("add", (request.request_id, list(request.prompt_ids), params)))
        while True:
            item = await row.out.get()
            yield item
            if item.finished:
                return

    # -- delivery (event loop) ------------------------------------------------------------------

    def _deliver(
        self, outputs: list[SeqOutput], error: str | None = None, logprobs: dict[str, TokenLogprob] | None = None
    ) -> None:
        for o in outputs:
            row = self._rows.get(o.request_id)
            if row is None:
                continue
            reason = None if error else o.finish_reason
            lp = logprobs.get(o.request_id) if logprobs and o.token_ids else None
            row.out.put_nowait(TokenOutput(list(o.token_ids), o.finished, reason, error, [lp] if lp else None))
            if o.finished:
                self._rows.pop(o.request_id, None)

    def _emit(
        self, outputs: list[SeqOutput], error: str | None = None, logprobs: dict[str, TokenLogprob] | None = None
    ) -> None:
        if outputs and self._loop is not None:
            self._loop.call_soon_threadsafe(self._deliver, outputs, error, logprobs)

    # -- the step loop (its own thread) ---------------------------------------------------------

    def _publish(self) -> None:
        """The scheduler's counts for :meth:`stats`, as one immutable value (its assignment is atomic)."""
        s = self.scheduler
        self._snapshot = _Snapshot(len(s.running), len(s.waiting), s.used_blocks)

    def _command(self, kind: str, arg: Any) -> None:
        """Apply one command. The snapshot is published before its outputs go out, so a reader that saw a
        request end never reads it as still running."""
        ended: list[SeqOutput] = []
        error = None
        if kind == "add":
            rid, prompt, params = arg
            try:
                self.scheduler.add(rid, prompt, params)
            except ValueError as e:
                ended, error = [SeqOutput(rid, (), True, None)], str(e)
        elif kind == "abort":
            ended = self.scheduler.abort(arg)
        self._publish()
        self._emit(ended, error=error)

    def _drain(self, block: bool) -> None:
        """Apply the commands waiting in the inbox; with ``block``, wait for one first (unless stopping)."""
        try:
            kind, arg = self._inbox.get() if block and not self._stopping else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            if kind == "stop":
                self._stopping = True
                return
            self._command(kind, arg)
            try:
                kind, arg = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _batch(self, plan: StepPlan) -> StepBatch:
        ids: list[int] = []
        pos: list[int] = []
        chunks: list[tuple[int, int, int, list[int]]] = []
        sample_index: list[int] = []
        adapters: list[str | None] = []
        for c in plan.chunks:
            row = self._rows.get(c.request_id)
            adapters.append(row.request.adapter if row is not None else None)
            n = len(c.token_ids)
            chunks.append((len(ids), n, c.start, list(c.block_ids)))
            ids += c.token_ids
            pos += range(c.start, c.start + n)
            if c.sample:
                sample_index.append(len(ids) - 1)
        return StepBatch(ids, pos, chunks, sample_index, adapters if any(adapters) else None)

    def _sample(
        self, plan: StepPlan, logits: torch.Tensor
    ) -> tuple[dict[str, int], dict[str, TokenLogprob], dict[str, str]]:
        """Each sampling row's next token, within its stop-token bans and its grammar; the log-probabilities
        of the rows that asked; and the rows that failed, with why (a grammar that allowed no token or refused
        the one sampled; logits that are no distribution), which the caller ends with that error alone."""
        picked = [c for c in plan.chunks if c.sample]
        rows = [self._rows.get(c.request_id) for c in picked]
        failed: dict[str, str] = {}
        live: list[tuple[int, Chunk, _Row, torch.Tensor | None]] = []
        for i, (c, r) in enumerate(zip(picked, rows, strict=True)):
            if r is None:
                continue
            k = r.request.constraint
            mask = k.allowed() if k is not None else None
            if mask is not None and not bool(mask.any()):
                failed[c.request_id] = GRAMMAR_DEAD_END
                continue
            live.append((i, c, r, mask))
        if not live:
            return {}, {}, failed
        constrained = constrain(
            logits[[i for i, _, _, _ in live]], [c.banned_ids for _, c, _, _ in live], [m for *_, m in live]
        )
        ok = drawable(constrained).tolist()
        if not all(ok):
            for (_, c, _, _), good in zip(live, ok, strict=True):
                if not good:
                    failed[c.request_id] = NOT_A_DISTRIBUTION
            constrained = constrained[[j for j, good in enumerate(ok) if good]]
            live = [x for x, good in zip(live, ok, strict=True) if good]
            if not live:
                return {}, {}, failed
        params = [r.request.sampling for _, _, r, _ in live]
        try:
            tokens: list[int | None] = list(sample(constrained, params, [r.gen for _, _, r, _ in live]))
        except RuntimeError:  # one row's parameters broke the sampler: find it, and fail it alone
            tokens = []
            for j, (_, c, r, _) in enumerate(live):
                try:
                    tokens.append(sample(constrained[j : j + 1], [params[j]], [r.gen])[0])
                except RuntimeError as e:
                    failed[c.request_id] = f"{SAMPLING_FAILED}: {e}"
                    tokens.append(None)
        out: dict[str, int] = {}
        lps: dict[str, TokenLogprob] = {}
        for j, ((_, c, r, _), t) in enumerate(zip(live, tokens, strict=True)):
            if t is None:
                continue
            k = r.request.constraint
            if k is not None and not k.consume(t):
                failed[c.request_id] = GRAMMAR_DEAD_END
                continue
            out[c.request_id] = t
            if params[j].logprobs is not None:
                lps[c.request_id] = token_logprob(constrained[j], params[j], t)
        return out, lps, failed

    def _run(self) -> None:
        torch.set_num_threads(self._threads)
        in_flight: deque[tuple[StepPlan, Any]] = deque()
        try:
            while not self._stopping:
                self._drain(block=False)
                while not self._stopping and len(in_flight) < self.config.in_flight:
                    plan = self.scheduler.schedule()
                    if plan is None:
                        break
                    in_flight.append((plan, self.executor.submit(self._batch(plan))))
                if not in_flight:
                    self._drain(block=True)
                    continue
                plan, handle = in_flight.popleft()
                logits = self.executor.result(handle)
                sampled, lps, failed = self._sample(plan, logits)
                for rid in failed:  # marked while its step is in flight: the update below ends it
                    self.scheduler.abort(rid)
                outputs = self.scheduler.update(plan, sampled)
                self._publish()
                self.steps += 1
                self._meter.add(time.monotonic(), sum(len(o.token_ids) for o in outputs))
                self._emit([o for o in outputs if o.request_id not in failed], logprobs=lps)
                for why in set(failed.values()):
                    self._emit([o for o in outputs if failed.get(o.request_id) == why], error=why)
        except Exception as e:  # a stage failed: every request fails with it, and the engine is unhealthy
            self._failed = f"{type(e).__name__}: {e}"
            self._emit([SeqOutput(rid, (), True, None) for rid in list(self.scheduler.seqs)], error=self._failed)


def local_engine(path: str, stage_ranges: Sequence[tuple[int, int]], **kw: Any) -> BatchedEngine:
    """A BatchedEngine over in-process stages (``[(0, layers)]`` for the whole model)."""
    from ossfleet.engine.stages import PipelineStage

    dtype = kw.pop("dtype", "float32")
    device = kw.pop("device", "cpu")
    weights = kw.pop("weights", "bf16")
    stages = [PipelineStage(path, a, b, dtype=dtype, device=device, weights=weights) for a, b in stage_ranges]
    return BatchedEngine(LocalExecutor(stages), **kw)
