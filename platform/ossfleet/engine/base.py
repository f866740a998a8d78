"""The engine interface every replica (and batch job) drives.

An engine takes requests of prompt token ids plus sampling parameters and
streams generated token ids back, as many requests at once as it has slots.
The replica's loop (``ossfleet.worker``) pulls from Redis only while
:meth:`Engine.free_slots` is positive, so the engine never queues work that
Redis should be holding.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol


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


@dataclass(frozen=True)
class EngineRequest:
    request_id: str
    prompt_ids: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop_token_ids: tuple[int, ...] = ()
    priority: int = 0  # the request's band: 0 first; a lower band is preempted first when KV runs short


@dataclass(frozen=True)
class TokenOutput:
    """New tokens of one request since its previous output."""

    token_ids: list[int]
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    error: str | None = None


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


class ThroughputMeter:
    """Events (tokens, requests) per second over a sliding window; safe across threads."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def add(self, now: float, count: int) -> None:
        with self._lock:
            self._events.append((now, count))
            cutoff = now - self.window_s
            while self._events and self._events[0][0] < cutoff:
                self._events.popleft()

    def rate(self, now: float) -> float:
        cutoff = now - self.window_s
        with self._lock:
            total = sum(n for t, n in self._events if t >= cutoff)
        return total / self.window_s
