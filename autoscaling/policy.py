"""The autoscaling policy: a pure function from signals and state to a replica count.

One replica is the unit: for gpt-oss-120b a replica *is* a whole pipeline
group (its stages come and go with it), so the policy never asks for part of
one. The decision, per model:

1. **Forecast.** A new replica takes a cold start to serve, so capacity must
   be there before load arrives, not after. The online arrival rate
   (interactive and standard bands) is followed two ways:

   - a *trend* the policy can follow (a rise slower than a cold start):
     provision for the rate a cold start from now, extrapolated from the
     last cold start's rise;
   - a *burst* it cannot (the rate rose by ``burst_factor`` within one cold
     start, by a replica's capacity or more): its peak is remembered and
     capacity for it is held for ``burst_hold_s``, since bursts recur and the
     next one would otherwise find no replica warm.

   Replicas for a rate come from the measured per-replica capacity: the rate
   a cold start ahead and the held burst at full slots (they are foreseen);
   the rate now, where it exceeds the held burst, at ``target_utilization``
   (headroom for what is not).
2. **Demand now.** Enough slots for every running and waiting online
   request, and enough capacity to drain the backlog within
   max(``target_wait_s``, cold start).
3. **Batch work** (the lowest band) fills spare slots; on its own it asks
   for at most ``batch_max_replicas`` (the batch policy: 1 by default, so a
   queue-mode job at zero replicas still runs, and never buys a fleet).
4. **Up at once, down slowly.** From zero or when online demand (forecast
   included) rises, the count goes up at the next decision; growth asked by
   batch work alone waits ``upscale_delay_s``. Down only after demand has
   stayed below the count for ``downscale_delay_s``, to the highest demand
   seen meanwhile, by at most a quarter of the replicas per step.
5. **GPU guard.** No scale-down while any replica's GPU (or KV cache) is
   saturated.
6. **Scale to zero** only after ``idle_to_zero_s`` with nothing running or
   waiting and a forecast of zero replicas.

The clock is passed in (``now``), so tests drive time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ossfleet.protocol.load import ReplicaLoad


@dataclass(frozen=True)
class ModelSignals:
    waiting: int  # requests queued in Redis, all bands
    oldest_wait_s: float  # the oldest online (non-batch) request's wait
    replicas: tuple[ReplicaLoad, ...]
    waiting_batch: int = 0  # of ``waiting``, batch-band lines
    # Online (interactive + standard) arrivals per second over the last few seconds; None: unknown.
    arrivals_per_s: float | None = None
    # Distinct LoRA adapters the waiting online requests use (0: none, or not counted).
    adapters_waiting: int = 0

    @property
    def running(self) -> int:
        return sum(r.running for r in self.replicas)

    @property
    def running_batch(self) -> int:
        return sum(r.running_batch for r in self.replicas)


@dataclass(frozen=True)
class PolicyConfig:
    min_replicas: int = 0
    max_replicas: int = 8
    target_wait_s: float = 2.0
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0
    idle_to_zero_s: float = 300.0
    # A new replica's start-up: no backlog drains faster than replicas can arrive.
    cold_start_s: float = 60.0
    # Used until a replica has measured its own rate.
    default_requests_per_s: float = 1.0
    default_slots: int = 8
    saturation: float = 0.9
    # Share of a replica's slots the policy plans to fill: the rest is headroom
    # for arrivals during a cold start, when no new capacity can come.
    target_utilization: float = 0.8
    # A rise of the online arrival rate by this factor within one cold start is a burst...
    burst_factor: float = 2.0
    # ...whose peak rate is held this long after it was seen.
    burst_hold_s: float = 3600.0
    # Replicas batch-band work alone may keep (0: it only ever fills spare slots).
    batch_max_replicas: int = 1
    # LoRA adapters one replica holds at once (its LRU); 0: the model serves none.
    adapters_per_replica: int = 0


@dataclass(frozen=True)
class PolicyState:
    up_since: float | None = None  # demand has exceeded the count since then
    down_since: float | None = None  # demand has been below the count since then
    down_max: int = 0  # the highest demand seen since ``down_since``: where a scale-down may go
    idle_since: float | None = None  # nothing running or waiting since then
    # Online arrival rates seen over the last cold start: ((time, requests/s), ...), oldest first.
    rates: tuple[tuple[float, float], ...] = ()
    # Burst peaks still held: ((time seen, requests/s), ...), each higher than every later one.
    bursts: tuple[tuple[float, float], ...] = ()
    burst_start: float | None = None  # when the latest burst began (its peak is followed for a cold start)


# A replica's rate counts once measured over this many completions (a young replica's is noise).
MIN_COMPLETIONS = 10
MAX_DOWN_STEP = 0.25
TREND_CAP = 1.1


def capacity_rps(r: ReplicaLoad) -> float | None:
    """A replica's completion capacity at full slots: slots / the mean service time of the requests
    it completed; where that is not reported, its measured rate scaled from the slots in use to all
    of them (Little's law; wrong while the load steps). None before it has measured enough."""
    if r.completions is not None and r.completions < MIN_COMPLETIONS:
        return None
    if r.service_s is not None and r.service_s > 0:
        return r.max_slots / r.service_s
    if r.requests_per_s <= 0 or r.running <= 0:
        return None
    return r.max_slots * r.requests_per_s / r.running


def _capacity(s: ModelSignals, cfg: PolicyConfig) -> tuple[float, int, bool]:
    """(completions/s one replica sustains at full slots, slots per replica, whether the rate was
    measured): the replicas' measured rates, or the configured default before any has one."""
    caps = sorted(c for c in (capacity_rps(r) for r in s.replicas) if c)
    slots = max((r.max_slots for r in s.replicas), default=cfg.default_slots) or cfg.default_slots
    if not caps:
        return cfg.default_requests_per_s, slots, False
    return caps[len(caps) // 2], slots, True  # the median: one replica's noisy estimate does not swing it


@dataclass(frozen=True)
class Forecast:
    now: float  # requests/s now
    trend: float  # requests/s a cold start from now, if the last cold start's rise goes on
    burst: float  # the held burst peak, requests/s


def forecast(s: ModelSignals, state: PolicyState, cfg: PolicyConfig, now: float) -> tuple[Forecast, PolicyState]:
    """The rates to provision for, and the state that remembers the rates behind them."""
    if s.arrivals_per_s is None:
        return Forecast(0.0, 0.0, 0.0), state
    rate = s.arrivals_per_s
    window = max(cfg.cold_start_s, 1.0)
    rates = (*((t, r) for t, r in state.rates if t >= now - window), (now, rate))
    low = min(r for _, r in rates)
    t0, r0 = rates[0]
    slope = (rate - r0) / (now - t0) if now > t0 else 0.0
    # Extrapolated over a cold start, at most ``TREND_CAP`` x the rate now (a step is a burst, not a trend).
    trend = min(max(rate, rate + slope * window), TREND_CAP * rate)
    bursts = [(t, r) for t, r in state.bursts if t >= now - cfg.burst_hold_s]
    cap, _, measured = _capacity(s, cfg)
    start = state.burst_start
    jump = measured and rate > cfg.burst_factor * low and rate - low >= cap
    if jump and (start is None or now - start > window):
        start = now  # a rise of a replica's worth or more that no cold start could follow
    if start is not None and now - start <= window:  # the burst's peak, as it climbs
        while bursts and bursts[-1][1] <= rate:
            bursts.pop()
        bursts.append((now, rate))
    held = max((r for _, r in bursts), default=0.0)
    return Forecast(rate, trend, held), replace(state, rates=rates, bursts=tuple(bursts), burst_start=start)


def for_forecast(s: ModelSignals, cfg: PolicyConfig, rate: Forecast | None) -> int:
    """Replicas the forecast asks for (none until a replica's capacity is measured): the rate now at
    the target utilization where it exceeds the held burst; the rate a cold start ahead and the held
    burst at full slots (they are foreseen; headroom is for what is not)."""
    cap, _, measured = _capacity(s, cfg)
    if rate is None or not measured:
        return 0
    for_now = math.ceil(rate.now / (cap * cfg.target_utilization)) if rate.now > rate.burst else 0
    return max(for_now, math.ceil(rate.trend / cap), math.ceil(rate.burst / cap))


def online_demand(s: ModelSignals, cfg: PolicyConfig, rate: Forecast | None = None) -> int:
    """Replicas needed for online (interactive, standard) work now and for the forecast."""
    cap, slots, _ = _capacity(s, cfg)
    online_waiting = max(s.waiting - s.waiting_batch, 0)
    online_running = max(s.running - s.running_batch, 0)
    # Every running and waiting online request needs a slot...
    for_slots = math.ceil((online_running + online_waiting) / (slots * cfg.target_utilization))
    # ...the backlog must drain within the target wait, or as fast as new replicas can come...
    horizon = max(cfg.target_wait_s, cfg.cold_start_s)
    for_backlog = math.ceil(online_waiting / (horizon * cap)) if online_waiting else 0
    # ...and the forecast must find capacity already up (in replicas: once a replica's rate is known).
    busy = 1 if (online_running or online_waiting) else 0
    # Every adapter that has work waiting needs a replica that can hold it at once: more distinct adapters
    # than the replicas' LRUs hold means requests wait for others to finish before theirs can load.
    for_adapters = math.ceil(s.adapters_waiting / cfg.adapters_per_replica) if cfg.adapters_per_replica else 0
    return max(for_backlog, for_slots, for_forecast(s, cfg, rate), busy, for_adapters)


def batch_demand(s: ModelSignals, cfg: PolicyConfig) -> int:
    """Replicas batch-band work asks for on its own: at most ``batch_max_replicas``."""
    batch = s.running_batch + s.waiting_batch
    _, slots, _ = _capacity(s, cfg)
    return min(math.ceil(batch / slots), cfg.batch_max_replicas) if batch else 0


def demand(s: ModelSignals, cfg: PolicyConfig, rate: Forecast | None = None) -> int:
    """Replicas needed for online work now and for the forecast, plus batch work's share."""
    return max(online_demand(s, cfg, rate), batch_demand(s, cfg))


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
    rate, state = forecast(s, state, cfg, now)
    online = _clamp(online_demand(s, cfg, rate), cfg)
    want = max(online, _clamp(batch_demand(s, cfg), cfg))
    idle = s.running == 0 and s.waiting == 0
    state = replace(state, idle_since=(state.idle_since if state.idle_since is not None else now) if idle else None)

    if want > current:
        state = replace(state, down_since=None)
        if current == 0 or online > current:
            return want, replace(state, up_since=None)  # from zero, or online demand: at once
        # Only batch work asks for more: it waits the up delay (its lines can wait; a GPU is dear).
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
        down_since = now if state.down_since is None else state.down_since
        down_max = want if state.down_since is None else max(state.down_max, want)
        if now - down_since >= cfg.downscale_delay_s:
            # To the highest demand of the delay, a quarter of the replicas at most per step: a wrong
            # estimate never empties the fleet at once.
            to = max(down_max, current - math.ceil(current * MAX_DOWN_STEP))
            return to, replace(state, down_since=None, down_max=0)
        return current, replace(state, down_since=down_since, down_max=down_max)
    return current, replace(state, down_since=None)
