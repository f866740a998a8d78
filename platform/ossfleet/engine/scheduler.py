"""The engine's step policy: which requests advance this step, by how many tokens.

The shape is vLLM v1's scheduler. Every request is a run of tokens (its
prompt, then what it generated) of which ``computed`` already have KV in the
cache. Each step gets a token budget. :meth:`Scheduler.schedule` spends it on
running requests first (a decoding request needs one token, a request still
prefilling a chunk), then starts waiting requests, highest band first, whose
prompts are prefilled in chunks within what is left; it returns one
:class:`StepPlan`. The executor runs the plan and samples a token for every
chunk that completes its request's known tokens; :meth:`Scheduler.update`
folds those tokens back and applies the finish rules. A request joins the
running batch at the next step; one that finishes or is aborted leaves at
once. Nothing here touches a tensor, a thread or a device: it is tested with
plain values (``tests/unit/test_scheduler.py``).

KV memory is counted in blocks of ``block_size`` tokens (the stages hold the
tensors, indexed by the block ids the plan carries). When a step needs a
block and none is free, the scheduler preempts the running request of the
lowest band that started last (never one whose step is still in flight): its
blocks are freed, its generated tokens kept, and it goes back to the head of
its band's waiting line, to have its KV recomputed (prompt and output
together) when it resumes. A waiting request may also preempt a running one
of a lower band, so an interactive request never waits behind batch work.

With a pipeline of S stages the executor keeps S plans in flight; a request
in flight is not scheduled again until its step returns, and each plan takes
at most ``ceil(max_slots / S)`` requests, so the requests spread over S
groups and every stage works on every step.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SchedulerConfig:
    max_slots: int  # requests held at once (running or waiting)
    num_blocks: int  # KV blocks, each of block_size tokens
    block_size: int = 16
    max_step_tokens: int = 512  # tokens one step computes, over all its requests
    max_prefill_chunk: int = 512  # a longer prompt is prefilled over several steps
    in_flight: int = 1  # plans in flight at once (a pipeline's stage count)

    def __post_init__(self) -> None:
        if min(self.max_slots, self.num_blocks, self.block_size, self.max_step_tokens, self.in_flight) < 1:
            raise ValueError(f"every scheduler size must be positive: {self}")
        if self.max_prefill_chunk < 1:
            raise ValueError("max_prefill_chunk must be positive")


@dataclass(frozen=True)
class SeqParams:
    """What the scheduler needs of a request's sampling parameters."""

    max_tokens: int
    stop_token_ids: frozenset[int] = frozenset()
    min_tokens: int = 0  # stop tokens cannot be sampled before this many outputs
    ignore_eos: bool = False  # stop tokens do not end the request
    priority: int = 0  # the band: 0 first


@dataclass
class Sequence:
    request_id: str
    prompt: list[int]
    params: SeqParams
    arrival: int
    output: list[int] = field(default_factory=list)
    computed: int = 0  # tokens whose KV the cache holds
    blocks: list[int] = field(default_factory=list)
    started: int = -1  # when it last started running (a counter), for choosing a victim
    last_step: int = -1  # the last step it ran in, for taking turns under a pipeline's per-plan cap
    in_flight: bool = False
    aborted: bool = False

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.output)

    def tokens(self, start: int, end: int) -> tuple[int, ...]:
        p = len(self.prompt)
        if end <= p:
            return tuple(self.prompt[start:end])
        return tuple(self.prompt[start:] + self.output[max(0, start - p) : end - p])


@dataclass(frozen=True)
class Chunk:
    """Tokens of one request to compute this step, at positions ``start .. start + len(token_ids) - 1``."""

    request_id: str
    start: int
    token_ids: tuple[int, ...]
    block_ids: tuple[int, ...]  # the request's block table: position p lies in block_ids[p // block_size]
    sample: bool  # the logits of its last token pick the request's next token
    banned_ids: tuple[int, ...] = ()  # tokens the sampler must not pick (stop tokens before min_tokens)


@dataclass(frozen=True)
class StepPlan:
    step: int
    chunks: tuple[Chunk, ...]
    preempted: tuple[str, ...] = ()


@dataclass(frozen=True)
class SeqOutput:
    """New tokens of one request; the last one of a request has ``finished``."""

    request_id: str
    token_ids: tuple[int, ...]
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "abort"


def fits(config: SchedulerConfig, prompt_len: int, max_tokens: int) -> bool:
    """Whether a request could ever run: its prompt and output fit the whole cache."""
    return math.ceil((prompt_len + max_tokens) / config.block_size) <= config.num_blocks


class Scheduler:
    """Holds every request the engine has and decides each step (no I/O, no tensors)."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.seqs: dict[str, Sequence] = {}
        self.waiting: list[Sequence] = []  # by (priority, arrival)
        self.running: list[Sequence] = []
        self._free = list(range(config.num_blocks - 1, -1, -1))  # a stack: low ids first
        self._arrivals = itertools.count()
        self._starts = itertools.count()
        self._steps = itertools.count()
        self.preemptions = 0

    # -- what the engine asks ---------------------------------------------------------------

    def blocks_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.config.block_size)

    def fits(self, prompt_len: int, max_tokens: int) -> bool:
        return fits(self.config, prompt_len, max_tokens)

    @property
    def used_blocks(self) -> int:
        return self.config.num_blocks - len(self._free)

    # -- changes from outside ---------------------------------------------------------------

    def add(self, request_id: str, prompt: list[int], params: SeqParams) -> None:
        if request_id in self.seqs:
            raise ValueError(f"request {request_id!r} is already in the engine")
        if not prompt:
            raise ValueError("the prompt is empty")
        if not self.fits(len(prompt), params.max_tokens):
            raise ValueError(
                f"prompt ({len(prompt)} tokens) + max_tokens ({params.max_tokens}) exceed the KV cache "
                f"({self.config.num_blocks * self.config.block_size} tokens)"
            )
        seq = Sequence(request_id, list(prompt), params, next(self._arrivals))
        self.seqs[request_id] = seq
        self._enqueue(seq)

    def abort(self, request_id: str) -> list[SeqOutput]:
        """Stop a request. It ends now unless its step is in flight; then it ends when that step returns."""
        seq = self.seqs.get(request_id)
        if seq is None:
            return []
        seq.aborted = True
        if seq.in_flight:
            return []
        return [self._finish(seq, (), "abort")]

    # -- one step ---------------------------------------------------------------------------

    def schedule(self) -> StepPlan | None:
        """The next step's plan, or None when nothing can run now (everything in flight or idle)."""
        cfg = self.config
        budget = cfg.max_step_tokens
        cap = math.ceil(cfg.max_slots / cfg.in_flight)
        step = next(self._steps)
        chunks: list[Chunk] = []
        scheduled: set[str] = set()
        preempted: list[str] = []

        # One pass in band order; within a band, running requests before waiting ones. So a waiting
        # interactive request is placed before running batch rows, and may take their blocks.
        running = sorted(self._runnable(), key=lambda s: (s.params.priority, s.last_step, s.started))
        order = sorted(
            [(s.params.priority, 0, i, s) for i, s in enumerate(running)]
            + [(s.params.priority, 1, i, s) for i, s in enumerate(self.waiting)],
            key=lambda t: t[:3],
        )
        waiting_blocked = False
        for _, is_waiting, _, seq in order:
            if len(chunks) >= cap or budget <= 0:
                break
            n = min(seq.length - seq.computed, budget, cfg.max_prefill_chunk)
            if is_waiting:
                if waiting_blocked or len(self.running) >= cfg.max_slots:
                    waiting_blocked = True  # later arrivals wait in order behind this one
                    continue
                while not self._reserve(seq, seq.computed + n):
                    victim = self._victim(exclude=scheduled, below=seq.params.priority)
                    if victim is None:
                        break
                    self._preempt(victim)
                    preempted.append(victim.request_id)
                if not self._reserve(seq, seq.computed + n):
                    waiting_blocked = True
                    continue
                self.waiting.remove(seq)
                seq.started = next(self._starts)
                self.running.append(seq)
            else:
                if seq not in self.running:  # preempted earlier in this pass
                    continue
                while not self._reserve(seq, seq.computed + n):
                    victim = self._victim(exclude=scheduled)
                    if victim is None or victim is seq:
                        if victim is seq:
                            self._preempt(seq)
                            preempted.append(seq.request_id)
                        n = 0
                        break
                    self._preempt(victim)
                    preempted.append(victim.request_id)
                if n <= 0:
                    continue
            chunks.append(self._chunk(seq, n, step))
            scheduled.add(seq.request_id)
            budget -= n

        if not chunks:
            return None
        return StepPlan(step, tuple(chunks), tuple(preempted))

    def update(self, plan: StepPlan, sampled: Mapping[str, int]) -> list[SeqOutput]:
        """Fold a step's results back: advance each request, apply the finish rules."""
        outputs: list[SeqOutput] = []
        for c in plan.chunks:
            seq = self.seqs.get(c.request_id)
            if seq is None:
                continue
            seq.in_flight = False
            if seq.aborted:
                outputs.append(self._finish(seq, (), "abort"))
                continue
            seq.computed = c.start + len(c.token_ids)
            if not c.sample:
                continue
            token = sampled[c.request_id]
            seq.output.append(token)
            p = seq.params
            reason = None
            if token in p.stop_token_ids and not p.ignore_eos:
                reason = "stop"
            elif len(seq.output) >= p.max_tokens:
                reason = "length"
            if reason is not None:
                outputs.append(self._finish(seq, (token,), reason))
            else:
                outputs.append(SeqOutput(seq.request_id, (token,)))
        return outputs

    # -- internals --------------------------------------------------------------------------

    def _runnable(self) -> list[Sequence]:
        return [s for s in self.running if not s.in_flight]

    def _enqueue(self, seq: Sequence) -> None:
        key = (seq.params.priority, seq.arrival)
        i = 0
        while i < len(self.waiting) and (self.waiting[i].params.priority, self.waiting[i].arrival) <= key:
            i += 1
        self.waiting.insert(i, seq)

    def _chunk(self, seq: Sequence, n: int, step: int) -> Chunk:
        start = seq.computed
        sample = start + n == seq.length
        banned: tuple[int, ...] = ()
        if sample and len(seq.output) < seq.params.min_tokens:
            banned = tuple(sorted(seq.params.stop_token_ids))
        seq.in_flight = True
        seq.last_step = step
        return Chunk(seq.request_id, start, seq.tokens(start, start + n), tuple(seq.blocks), sample, banned)

    def _reserve(self, seq: Sequence, tokens: int) -> bool:
        need = self.blocks_for(tokens) - len(seq.blocks)
        if need <= 0:
            return True
        if need > len(self._free):
            return False
        seq.blocks += [self._free.pop() for _ in range(need)]
        return True

    def _victim(self, exclude: set[str], below: int | None = None) -> Sequence | None:
        """The running request to preempt: lowest band, then the latest started; never one in flight."""
        cands = [s for s in self.running if not s.in_flight and s.request_id not in exclude]
        if below is not None:
            cands = [s for s in cands if s.params.priority > below]
        if not cands:
            return None
        return max(cands, key=lambda s: (s.params.priority, s.started))

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._release(seq)
        seq.computed = 0
        self.preemptions += 1
        self._enqueue(seq)

    def _release(self, seq: Sequence) -> None:
        self._free.extend(reversed(seq.blocks))
        seq.blocks = []

    def _finish(self, seq: Sequence, tokens: tuple[int, ...], reason: str) -> SeqOutput:
        self.seqs.pop(seq.request_id, None)
        if seq in self.running:
            self.running.remove(seq)
        if seq in self.waiting:
            self.waiting.remove(seq)
        self._release(seq)
        return SeqOutput(seq.request_id, tokens, True, reason)
