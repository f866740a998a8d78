"""The engine interface every replica (and batch job) drives.

An engine takes requests of prompt token ids plus sampling parameters and
streams generated token ids back, as many requests at once as it has slots.
The replica's loop (``ossfleet.replica.worker``) pulls from Redis only while
:meth:`Engine.free_slots` is positive, so the engine never queues work that
Redis should be holding.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. ``temperature == 0`` means greedy."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    min_tokens: int = 0  # the stop tokens cannot be sampled before this many tokens
    ignore_eos: bool = False  # the stop tokens do not end the request (benchmarks of long outputs)
    # Log-probabilities to return with each token: None for none, 0 for the sampled token's alone,
    # k for it and the k most likely (from the distribution sampled from: after the masks and temperature).
    logprobs: int | None = None


class TokenConstraint(Protocol):
    """What a request's output must follow (a grammar), token by token; used on the engine's step thread."""

    def allowed(self) -> torch.Tensor:
        """A bool mask over the tokenizer's vocabulary: the tokens that may come next."""

    def consume(self, token_id: int) -> bool:
        """Advance past a sampled token; False if the constraint did not allow it."""


@dataclass(frozen=True)
class EngineRequest:
    request_id: str
    prompt_ids: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop_token_ids: tuple[int, ...] = ()
    priority: int = 0  # the request's band: 0 first; a lower band is preempted first when KV runs short
    constraint: TokenConstraint | None = None  # structured output: the sampler only picks tokens it allows
    adapter: str | None = None  # a LoRA adapter loaded on the engine (``load_adapter``); None: the base model
    # The Lark source of ``constraint``'s grammar, for engines that enforce it themselves (vLLM).
    grammar: str | None = None
    # Prefix-cache isolation: requests share cached prefixes only under the same salt (the tenant).
    cache_salt: str | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """A sampled token's log-probability, and the most likely alternatives' (best first)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class TokenOutput:
    """New tokens of one request since its previous output."""

    token_ids: list[int]
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    error: str | None = None
    logprobs: list[TokenLogprob] | None = None  # one per token id, where the request asked for them
    cached_tokens: int | None = None  # on a request's first output: prompt tokens the prefix cache served


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    max_slots: int
    kv_cache_used: float | None  # fraction of KV cache in use; None where unknown
    tokens_per_s: float

    @property
    def free_slots(self) -> int:
        return max(0, self.max_slots - self.running - self.waiting)


class EngineError(RuntimeError):
    """A request cannot run on this engine (too long, bad parameters)."""

    status = 0  # the HTTP status the request's caller gets for it; 0: a failed generation (500)


class EngineRefused(EngineError):
    """The request itself cannot be served (an empty or too long prompt, a token id past the vocabulary, a
    structured-output grammar that reached a state no token continues): its caller gets a 400 saying so, not
    the 500 of a failed generation, and no other replica is tried."""

    status = 400


# A row's grammar allowed no token (or refused the one sampled) mid-generation: the schema's constraints
# cannot be met by this model's vocabulary within its limits. The caller's to change, so a 400.
GRAMMAR_DEAD_END = (
    "the structured-output grammar reached a state that no token of this model can continue (a pattern, "
    "length or format the vocabulary cannot spell within max_tokens): simplify the schema or raise max_tokens"
)


class Engine(Protocol):
    """What a replica needs from an engine."""

    max_context: int

    async def start(self) -> None:
        """Load weights and warm up; called once before the first request."""

    async def stop(self) -> None:
        """Stop generating and free the device."""

    def free_slots(self) -> int:
        """How many more requests the engine would run right now."""

    def generate(self, request: EngineRequest) -> AsyncIterator[TokenOutput]:
        """Run one request, yielding its new tokens as they come; the last output has ``finished``."""

    def abort(self, request_id: str) -> None:
        """Stop a running request; its stream ends with ``finish_reason == "abort"``."""

    def stats(self) -> EngineStats:
        """Counters for health checks and the autoscaler."""

    def healthy(self) -> bool:
        """False once the engine can no longer generate (its thread died, the device failed)."""


class AdapterEngine(Engine, Protocol):
    """An engine that serves LoRA adapters (``EngineRequest.adapter``): ossfleet's batched engine."""

    async def load_adapter(self, key: str, config: dict[str, Any], data: bytes) -> None:
        """Load an adapter (PEFT's config and its safetensors bytes) under ``key``."""

    async def unload_adapter(self, key: str) -> None: ...


class ThroughputMeter:
    """Events (tokens, requests) per second over a sliding window; safe across threads.

    Until the meter has existed for a whole window (from its first use), the
    rate divides by the time it has, not by the window: a young replica's rate
    is not read as a slow one. Each event may carry a value (a request's
    service time, say), whose mean over the window ``mean`` gives.
    """

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, int, float]] = deque()
        self._lock = threading.Lock()
        self._since: float | None = None

    def add(self, now: float, count: int, value: float = 0.0) -> None:
        with self._lock:
            if self._since is None:
                self._since = now
            self._events.append((now, count, value))
            cutoff = now - self.window_s
            while self._events and self._events[0][0] < cutoff:
                self._events.popleft()

    def _window(self, now: float) -> list[tuple[float, int, float]]:
        cutoff = now - self.window_s
        with self._lock:
            if self._since is None:
                self._since = now
            return [e for e in self._events if e[0] >= cutoff]

    def rate(self, now: float) -> float:
        events = self._window(now)
        assert self._since is not None
        span = min(self.window_s, max(now - self._since, 1.0))
        return sum(n for _, n, _ in events) / span

    def count(self, now: float) -> int:
        """Events within the window."""
        return sum(n for _, n, _ in self._window(now))

    def mean(self, now: float) -> float | None:
        """The mean value of the window's events (None without any)."""
        events = self._window(now)
        n = sum(c for _, c, _ in events)
        return sum(v for _, _, v in events) / n if n else None
