"""The autoscaling policy: a pure function from signals and state to a replica count.

One replica is the unit: for gpt-oss-120b a replica *is* a whole pipeline
group (its stages come and go with it), so the policy never asks for part of
one. A replica asked for now serves one cold start from now; the policy
scales for the work that capacity can still help with, predicted, not for
what it sees:

1. **Predict the backlog** (:func:`backlog_at`). With the replicas serving
   now (and those already starting, from when they arrive), a fluid model of
   the online queue: it grows while arrivals exceed what the replicas complete
   and drains while they do not. Arrivals are the rate now while an
   *overload episode* (arrivals above the ready capacity) is expected to go
   on, then the rate from before it. How long an episode goes on is learned
   from the last ones (:func:`expected_remaining_s`): one that has already
   outlasted them, or with none seen yet, is taken to go on.
2. **Add the fewest replicas that keep the SLO** (:func:`for_backlog`): none
   when the backlog drains before a new replica could serve; otherwise enough
   that, arriving one cold start from now, they keep up with the arrivals then
   and clear what waits within ``backlog_drain_s``.
3. **Hold what steady traffic needs** (:func:`for_rate`): the rate a cold
   start ahead (the trend, not an episode's peak) at ``target_utilization``;
   slots for what runs; a replica per LRU of adapters that waiting requests
   name; ``warm_pool`` spare replicas.
4. **Batch work** (the lowest band) fills spare slots; on its own it asks
   for at most ``batch_max_replicas``, after ``upscale_delay_s``.
5. **Down as soon as the prediction says so** (:func:`step_down`): after
   ``downscale_delay_s`` below the count (seconds, not an hour), to the
   highest demand of that time, a quarter of the replicas at most per step;
   never while a replica's GPU or KV cache is saturated; to zero only after
   ``idle_to_zero_s`` idle.

Each rule is a small function over plain data; :func:`decide` composes them.
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
    replicas: tuple[ReplicaLoad, ...]  # the replicas serving now
    waiting_batch: int = 0  # of ``waiting``, batch-band lines
    # Online (interactive + standard) arrivals per second over the last few seconds; None: unknown.
    arrivals_per_s: float | None = None
    # Distinct LoRA adapters the waiting online requests use (0: none, or not counted).
    adapters_waiting: int = 0
    starting: int = 0  # replicas asked for that do not serve yet (each serves within a cold start)

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
    target_wait_s: float = 2.0  # the SLO: an online request waits at most this long
    upscale_delay_s: float = 5.0  # batch work alone waits this long before it adds a replica
    downscale_delay_s: float = 60.0
    idle_to_zero_s: float = 300.0
    # A new replica's start-up, decision to first token: measured (bench/autoscaling.py's ``cold_start``).
    cold_start_s: float = 60.0
    # Used until a replica has measured its own rate.
    default_requests_per_s: float = 1.0
    default_slots: int = 8
    saturation: float = 0.9
    # Share of a replica's slots steady traffic may fill: the rest absorbs what the forecast misses.
    target_utilization: float = 0.8
    # What waits when new replicas arrive is cleared within this long (None: the cold start).
    backlog_drain_s: float | None = None
    # A rise of the online arrival rate by this factor within one cold start (and by a replica's capacity)
    # is a burst: no cold start can follow it.
    burst_factor: float = 2.0
    # A burst's peak is held this long after it was seen: bursts recur, and capacity started for the next
    # one arrives a cold start late (0: none held; the bench measures both).
    burst_hold_s: float = 3600.0
    # A replica's measured capacity is averaged over this long.
    capacity_window_s: float = 300.0
    # Bursts remembered (their durations predict how long the next one goes on).
    episodes_kept: int = 8
    warm_pool: int = 0  # replicas kept serving beyond what the prediction needs (each charged as one)
    # Replicas batch-band work alone may keep (0: it only ever fills spare slots).
    batch_max_replicas: int = 1
    # LoRA adapters one replica holds at once (its LRU); 0: the model serves none.
    adapters_per_replica: int = 0


@dataclass(frozen=True)
class PolicyState:
    up_since: float | None = None  # batch work alone has asked for more since then
    down_since: float | None = None  # demand has been below the count since then
    down_max: int = 0  # the highest demand seen since ``down_since``: where a scale-down may go
    idle_since: float | None = None  # nothing running or waiting since then
    # Online arrival rates seen over the last cold start: ((time, requests/s), ...), oldest first.
    rates: tuple[tuple[float, float], ...] = ()
    episode_start: float | None = None  # a burst since then
    episode_base: float = 0.0  # the arrival rate before it
    episode_peak: float = 0.0  # its highest rate over its first cold start
    episode_quiet_since: float | None = None  # the rate has been under the burst's threshold since then
    episodes: tuple[float, ...] = ()  # the last bursts' durations, oldest first
    # Burst peaks still held: ((time seen, requests/s), ...), each higher than every later one.
    bursts: tuple[tuple[float, float], ...] = ()
    last_burst_at: float | None = None  # when the last burst ended (a burst within burst_hold_s of it recurs)
    capacity_rps: float | None = None  # a replica's capacity, smoothed (smooth_capacity)
    capacity_at: float | None = None


# A replica's rate counts once measured over this many completions (a young replica's is noise).
MIN_COMPLETIONS = 10
MAX_DOWN_STEP = 0.25
BURST_END_S = 5.0  # a burst is over once the rate stayed under its threshold this long
TREND_CAP = 1.05


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


@dataclass(frozen=True)
class Capacity:
    per_replica_rps: float  # completions/s one replica sustains at full slots
    slots: int  # per replica
    measured: bool  # False: the configured default, before any replica measured its own


def capacity(s: ModelSignals, cfg: PolicyConfig, state: PolicyState | None = None) -> Capacity:
    """A replica's capacity: the smoothed figure in ``state`` where there is one (see
    :func:`smooth_capacity`), else the replicas' median measured now, else the configured default."""
    slots = max((r.max_slots for r in s.replicas), default=cfg.default_slots) or cfg.default_slots
    if state is not None and state.capacity_rps is not None:
        return Capacity(state.capacity_rps, slots, True)
    caps = sorted(c for c in (capacity_rps(r) for r in s.replicas) if c)
    if not caps:
        return Capacity(cfg.default_requests_per_s, slots, False)
    return Capacity(caps[len(caps) // 2], slots, True)


def smooth_capacity(s: ModelSignals, state: PolicyState, cfg: PolicyConfig, now: float) -> PolicyState:
    """The replicas' median measured capacity, averaged over ``capacity_window_s`` (exponentially): a 30 s
    window of completions is noisy where service times are heavy-tailed, and reads high on a young replica
    (its short requests finish first). Kept from one decision to the next, also while no replica reports."""
    caps = sorted(c for c in (capacity_rps(r) for r in s.replicas) if c)
    if not caps:
        return state
    now_cap = caps[len(caps) // 2]
    if state.capacity_rps is None or state.capacity_at is None:
        return replace(state, capacity_rps=now_cap, capacity_at=now)
    w = 1.0 - math.exp(-max(now - state.capacity_at, 0.0) / cfg.capacity_window_s)
    return replace(state, capacity_rps=state.capacity_rps + w * (now_cap - state.capacity_rps), capacity_at=now)


# -- arrivals: the trend, and overload episodes ---------------------------------------------------------


def trend(state: PolicyState, rate: float, cfg: PolicyConfig, now: float) -> tuple[float, PolicyState]:
    """The arrival rate a cold start from now if the last cold start's rise goes on, at most ``TREND_CAP``
    x the rate now (a step is an episode, not a trend), with the rates kept to compute it."""
    window = max(cfg.cold_start_s, 1.0)
    rates = (*((t, r) for t, r in state.rates if t >= now - window), (now, rate))
    t0, r0 = rates[0]
    slope = (rate - r0) / (now - t0) if now > t0 else 0.0
    return min(max(rate, rate + slope * window), TREND_CAP * rate), replace(state, rates=rates)


def track_episode(state: PolicyState, rate: float, replica_rps: float, cfg: PolicyConfig, now: float) -> PolicyState:
    """A burst (an episode): arrivals jumped within one cold start to ``burst_factor`` x the lowest rate of
    that cold start, by a replica's capacity or more; no cold start could follow it. It ends when the rate
    falls back under that threshold; its length is remembered (how long the next one is expected to last)
    and, from the second burst within ``burst_hold_s`` on (they recur), its peak held for ``burst_hold_s``:
    the next one would otherwise find no replica warm."""
    bursts = tuple((t, r) for t, r in state.bursts if t >= now - cfg.burst_hold_s)
    # Only a burst that recurs is held: the first one adds nothing (its backlog is the prediction's to judge).
    recurs = state.last_burst_at is not None and now - state.last_burst_at <= cfg.burst_hold_s
    if state.episode_start is None:
        low = min((r for _, r in state.rates), default=rate)
        seen = bool(state.rates) and now - state.rates[0][0] >= 0.9 * cfg.cold_start_s  # a cold start of history
        if seen and rate > cfg.burst_factor * low and rate - low >= replica_rps:
            held = _peak(bursts, now, rate) if recurs else bursts
            return replace(state, episode_start=now, episode_base=low, episode_peak=rate, bursts=held)
        return replace(state, bursts=bursts)
    # Over once the rate is back under the threshold it rose through, or under half the burst's peak.
    peak = state.episode_peak
    threshold = max(cfg.burst_factor * state.episode_base, state.episode_base + replica_rps, peak / cfg.burst_factor)
    if rate >= threshold:  # its peak is followed for a cold start; a rate that stays up after is a level
        climbing = now - state.episode_start <= cfg.cold_start_s
        held = _peak(bursts, now, rate) if climbing and recurs else bursts
        peak = max(peak, rate) if climbing else peak
        return replace(state, episode_quiet_since=None, episode_peak=peak, bursts=held)
    quiet_since = state.episode_quiet_since if state.episode_quiet_since is not None else now
    if now - quiet_since < BURST_END_S:  # a dip is not the end: it must stay under for a few seconds
        return replace(state, episode_quiet_since=quiet_since, bursts=bursts)
    kept = (*state.episodes, quiet_since - state.episode_start)[-cfg.episodes_kept :]
    return replace(state, episode_start=None, episode_quiet_since=None, episodes=kept, bursts=bursts,
                   last_burst_at=quiet_since)  # fmt: skip


def _peak(bursts: tuple[tuple[float, float], ...], now: float, rate: float) -> tuple[tuple[float, float], ...]:
    """The held peaks with ``rate`` seen ``now``: each kept one higher than every later one."""
    kept = [b for b in bursts if b[1] > rate]
    return (*kept, (now, rate))


def held_peak(state: PolicyState) -> float:
    return max((r for _, r in state.bursts), default=0.0)


def expected_remaining_s(state: PolicyState, now: float) -> float:
    """How much longer the current episode is expected to go on: the median past episode's length less
    its age; ``inf`` with no past episode, or once it has outlasted the median (it may be a new level)."""
    if state.episode_start is None:
        return 0.0
    if not state.episodes:
        return math.inf
    lengths = sorted(state.episodes)
    left = lengths[len(lengths) // 2] - (now - state.episode_start)
    return left if left > 0 else math.inf


# -- the prediction -----------------------------------------------------------------------------------


def backlog_at(
    horizon_s: float, waiting: float, rate: float, base: float, rate_for_s: float, serve_rps: float
) -> float:
    """The online backlog ``horizon_s`` from now (fluid): ``waiting`` now, arrivals at ``rate`` for
    ``rate_for_s`` then at ``base``, served at ``serve_rps`` throughout."""
    q = waiting
    first = min(rate_for_s, horizon_s)
    q = max(0.0, q + (rate - serve_rps) * first)
    return max(0.0, q + (base - serve_rps) * (horizon_s - first))


def for_backlog(s: ModelSignals, state: PolicyState, cap: Capacity, cfg: PolicyConfig, now: float) -> int:
    """Replicas the predicted backlog asks for, counting those that serve now: their number when what
    waits drains before a new replica could serve; otherwise the fewest that, arriving one cold start from
    now, keep up with the arrivals then and clear what waits within ``backlog_drain_s``."""
    if not cap.measured:  # nothing says how fast a replica drains what waits: for_rate gives it slots
        return 0
    rate = s.arrivals_per_s or 0.0  # unknown (the first second): what waits is all there is to go by
    n = len(s.replicas) + s.starting
    waiting = max(s.waiting - s.waiting_batch, 0)
    remaining = expected_remaining_s(state, now)
    base = state.episode_base if state.episode_start is not None else rate
    ready_rps = cap.per_replica_rps * len(s.replicas)
    at_cold_start = backlog_at(cfg.cold_start_s, waiting, rate, base, remaining, ready_rps)
    arrivals_then = rate if remaining > cfg.cold_start_s else base
    if at_cold_start <= 0 and arrivals_then <= cap.per_replica_rps * n:
        return 0
    drain_s = cfg.backlog_drain_s or cfg.cold_start_s
    return math.ceil((arrivals_then + at_cold_start / drain_s) / cap.per_replica_rps)


def for_rate(s: ModelSignals, state: PolicyState, rate_ahead: float, cap: Capacity, cfg: PolicyConfig) -> int:
    """Replicas steady traffic needs: its rate a cold start ahead at the target utilization (once a
    replica's capacity is measured), a slot for every running online request (and, before any capacity is
    measured, so nothing predicts how fast they drain, for every waiting one), a replica while anything is
    online, one per LRU of distinct adapters waiting requests name."""
    online_running = max(s.running - s.running_batch, 0)
    online_waiting = max(s.waiting - s.waiting_batch, 0)
    # A held burst's peak is foreseen: at full slots. The rate a cold start ahead at the target utilization
    # (the headroom is for what is not foreseen), unless the held peak covers it with that headroom.
    held = held_peak(state)
    for_bursts = math.ceil(held / cap.per_replica_rps) if cap.measured else 0
    ahead = rate_ahead > held / cfg.target_utilization and cap.measured
    for_arrivals = math.ceil(rate_ahead / (cap.per_replica_rps * cfg.target_utilization)) if ahead else 0
    for_slots = math.ceil((online_running + (0 if cap.measured else online_waiting)) / cap.slots)
    busy = 1 if (online_running or online_waiting) else 0
    for_adapters = math.ceil(s.adapters_waiting / cfg.adapters_per_replica) if cfg.adapters_per_replica else 0
    return max(for_arrivals, for_bursts, for_slots, busy, for_adapters)


def batch_demand(s: ModelSignals, cfg: PolicyConfig) -> int:
    """Replicas batch-band work asks for on its own: at most ``batch_max_replicas``."""
    batch = s.running_batch + s.waiting_batch
    slots = max((r.max_slots for r in s.replicas), default=cfg.default_slots) or cfg.default_slots
    return min(math.ceil(batch / slots), cfg.batch_max_replicas) if batch else 0


def online_demand(s: ModelSignals, state: PolicyState, cfg: PolicyConfig, now: float, rate_ahead: float) -> int:
    cap = capacity(s, cfg, state)
    need = max(for_rate(s, state, rate_ahead, cap, cfg), for_backlog(s, state, cap, cfg, now))
    return need + cfg.warm_pool if need else 0


def demand(s: ModelSignals, cfg: PolicyConfig, state: PolicyState | None = None, now: float = 0.0) -> int:
    """Replicas needed for online work (predicted) plus batch work's share, from the signals alone."""
    st = state or PolicyState()
    rate_ahead = s.arrivals_per_s or 0.0
    return max(online_demand(s, st, cfg, now, rate_ahead), batch_demand(s, cfg))


# -- the decision -------------------------------------------------------------------------------------


def _saturated(s: ModelSignals, cfg: PolicyConfig) -> bool:
    return any(
        (r.gpu_utilization is not None and r.gpu_utilization >= cfg.saturation)
        or (r.kv_cache_used is not None and r.kv_cache_used >= cfg.saturation)
        for r in s.replicas
    )


def _clamp(n: int, cfg: PolicyConfig) -> int:
    return max(cfg.min_replicas, min(cfg.max_replicas, n))


def step_up(
    online: int, want: int, current: int, state: PolicyState, cfg: PolicyConfig, now: float
) -> tuple[int, PolicyState]:
    """Online demand (or any from zero) at once; growth asked by batch work alone after ``upscale_delay_s``."""
    state = replace(state, down_since=None)
    if current == 0 or online > current:
        return want, replace(state, up_since=None)
    up_since = state.up_since if state.up_since is not None else now
    if now - up_since >= cfg.upscale_delay_s:
        return want, replace(state, up_since=None)
    return current, replace(state, up_since=up_since)


def step_down(
    s: ModelSignals, want: int, current: int, state: PolicyState, cfg: PolicyConfig, now: float
) -> tuple[int, PolicyState]:
    """After ``downscale_delay_s`` below the count, to the highest demand of that time, a quarter of the
    replicas at most per step; not while saturated; to zero only after ``idle_to_zero_s`` idle."""
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
        to = max(down_max, current - math.ceil(current * MAX_DOWN_STEP))
        return to, replace(state, down_since=None, down_max=0)
    return current, replace(state, down_since=down_since, down_max=down_max)


def decide(s: ModelSignals, current: int, state: PolicyState, cfg: PolicyConfig, now: float) -> tuple[int, PolicyState]:
    """The replica count to run now, and the state to pass to the next call."""
    state = smooth_capacity(s, state, cfg, now)
    cap = capacity(s, cfg, state)
    rate = s.arrivals_per_s
    rate_ahead = 0.0
    if rate is not None:
        rate_ahead, state = trend(state, rate, cfg, now)
        if cap.measured:
            state = track_episode(state, rate, cap.per_replica_rps, cfg, now)
        if state.episode_start is not None:  # an episode's peak is not a trend: steady need is its base's
            rate_ahead = max(
                state.episode_base, rate_ahead if expected_remaining_s(state, now) > cfg.cold_start_s else 0.0
            )
    online = _clamp(online_demand(s, state, cfg, now, rate_ahead), cfg)
    want = max(online, _clamp(batch_demand(s, cfg), cfg))
    idle = s.running == 0 and s.waiting == 0
    state = replace(state, idle_since=(state.idle_since if state.idle_since is not None else now) if idle else None)
    if want > current:
        return step_up(online, want, current, state, cfg, now)
    state = replace(state, up_since=None)
    if want < current:
        return step_down(s, want, current, state, cfg, now)
    return current, replace(state, down_since=None)
