"""The autoscaling policy: a pure function from signals and state to a replica count.

One replica is the unit: for gpt-oss-120b a replica *is* a whole pipeline
group (its stages come and go with it), so the policy never asks for part of
one. The decision, per model:

1. **Demand.** Enough replicas to drain the backlog within ``target_wait_s``
   at the measured per-replica completion rate, and enough slots for every
   running and waiting request.
2. **Scale from zero** the moment anything waits: requests wait in Redis,
   nothing is lost, and no stabilization delay applies.
3. **Panic.** When the oldest request has waited ``panic_factor`` times the
   target, scale to demand at once (a surge), skipping the up delay.
4. **Up/down stabilization.** Otherwise demand must stay above (below) the
   current count for ``upscale_delay_s`` (``downscale_delay_s``) before it
   moves, so a steady load does not flap.
5. **GPU guard.** No scale-down while any replica's GPU (or KV cache) is
   saturated: utilization is a poor load signal for LLM serving on its own
   (a busy GPU may be half idle in decode), but a saturated one must not lose
   a neighbour.
6. **Scale to zero** only after ``idle_to_zero_s`` with nothing running or waiting.

The clock is passed in (``now``), so tests drive time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ReplicaLoad:
    running: int
    max_slots: int
    requests_per_s: float  # measured completions per second (0: none yet)
    gpu_utilization: float | None = None  # 0..1, None where no GPU (absent, not zero)
    kv_cache_used: float | None = None  # 0..1, None where unknown


@dataclass(frozen=True)
class ModelSignals:
    waiting: int  # requests queued in Redis, all bands
    oldest_wait_s: float
    replicas: tuple[ReplicaLoad, ...]

    @property
    def running(self) -> int:
        return sum(r.running for r in self.replicas)


@dataclass(frozen=True)
class PolicyConfig:
    min_replicas: int = 0
    max_replicas: int = 8
    target_wait_s: float = 2.0
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0
    idle_to_zero_s: float = 300.0
    panic_factor: float = 2.0
    # A new replica's start-up: no backlog drains faster than replicas can arrive.
    cold_start_s: float = 60.0
    # Used until a replica has measured its own rate.
    default_requests_per_s: float = 1.0
    default_slots: int = 8
    saturation: float = 0.9
    # Share of a replica's slots the policy plans to fill: the rest is headroom
    # for arrivals during a cold start, when no new capacity can come.
    target_utilization: float = 0.8


@dataclass(frozen=True)
class PolicyState:
    up_since: float | None = None  # demand has exceeded the count since then
    down_since: float | None = None  # demand has been below the count since then
    idle_since: float | None = None  # nothing running or waiting since then


def capacity_rps(r: ReplicaLoad) -> float | None:
    """A replica's completion capacity: its measured rate scaled from the slots in use to all
    of them (Little's law: service time = running / rate). None before it has measured one."""
    if r.requests_per_s <= 0 or r.running <= 0:
        return None
    return r.max_slots * r.requests_per_s / r.running


def demand(s: ModelSignals, cfg: PolicyConfig) -> int:
    """Replicas needed right now, before any stabilization."""
    caps = [c for c in (capacity_rps(r) for r in s.replicas) if c]
    cap = sum(caps) / len(caps) if caps else cfg.default_requests_per_s
    slots = max((r.max_slots for r in s.replicas), default=cfg.default_slots) or cfg.default_slots
    # Every running and waiting request needs a slot...
    for_slots = math.ceil((s.running + s.waiting) / (slots * cfg.target_utilization))
    # ...and the backlog must drain within the target wait, or as fast as new replicas can come.
    horizon = max(cfg.target_wait_s, cfg.cold_start_s)
    for_backlog = math.ceil(s.waiting / (horizon * cap)) if s.waiting else 0
    busy = 1 if (s.running or s.waiting) else 0
    return max(for_backlog, for_slots, busy)


def _saturated(s: ModelSignals, cfg: PolicyConfig) -> bool:
    return any(
        (r.gpu_utilization is not None and r.gpu_utilization >= cfg.saturation)
        or (r.kv_cache_used is not None and r.kv_cache_used >= cfg.saturation)
        for r in s.replicas
    )


def _clamp(n: int, cfg: PolicyConfig) -> int:
    return max(cfg.min_replicas, min(cfg.max_replicas, n))


def decide(s: ModelSignals, current: int, state: PolicyState, cfg: PolicyConfig, now: float) -> tuple[int, PolicyState]:
    """The replica count to run now, and the state to pass to the next call."""
    want = _clamp(demand(s, cfg), cfg)
    idle = s.running == 0 and s.waiting == 0
    state = replace(state, idle_since=(state.idle_since if state.idle_since is not None else now) if idle else None)

    if want > current:
        state = replace(state, down_since=None)
        if current == 0 or s.oldest_wait_s >= cfg.panic_factor * cfg.target_wait_s:
            return want, replace(state, up_since=None)  # from zero, or a surge: at once
        up_since = state.up_since if state.up_since is not None else now
        if now - up_since >= cfg.upscale_delay_s:
            return want, replace(state, up_since=None)
        return current, replace(state, up_since=up_since)

    state = replace(state, up_since=None)
    if want < current:
        if _saturated(s, cfg):
            return current, replace(state, down_since=None)
        if want == 0:  # idle (any work demands one replica): zero only after a full idle period
            if state.idle_since is not None and now - state.idle_since >= cfg.idle_to_zero_s:
                return 0, replace(state, down_since=None)
            want = 1
            if want >= current:
                return current, replace(state, down_since=None)
        down_since = state.down_since if state.down_since is not None else now
        if now - down_since >= cfg.downscale_delay_s:
            return want, replace(state, down_since=None)
        return current, replace(state, down_since=down_since)
    return current, replace(state, down_since=None)
