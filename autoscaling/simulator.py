"""A trace-driven simulator that compares autoscaling policies by numbers.

It replays arrivals (a CSV trace in the Azure LLM inference format
``TIMESTAMP,ContextTokens,GeneratedTokens``, or synthetic Poisson, bursty and
diurnal arrivals) against a policy, with a modelled replica: a number of
concurrent slots, a service time from prompt and output tokens, a cold start,
and GPUs per replica. Requests wait in a FIFO queue (as in Redis) until a
ready replica has a free slot. It reports SLO attainment (share of requests
whose wait was within the target), p50/p99 wait, GPU-seconds and scaling
actions.

Requests carry a band: online ones (interactive, standard) are served
first; batch-band lines take a slot only when no online request waits, and
the SLO counts online requests only.

Policies are callables ``(signals, current_replicas, now) -> desired``:
:class:`OssfleetPolicy` wraps ``autoscaling.policy.decide``;
:class:`RayServeDefaultPolicy` models Ray Serve's request-based policy
(its defaults, or tuned to the replica's slots); :class:`QueueLengthPolicy`
a KEDA Redis list-length scaler behind a Kubernetes HPA;
:class:`OraclePolicy` knows every arrival ahead (the lower bound on
GPU-seconds at the SLO, paying the same cold start); :class:`StaticPolicy`
holds a fixed count.
"""

from __future__ import annotations

import csv
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from autoscaling.policy import ModelSignals, PolicyConfig, PolicyState, decide
from ossfleet.protocol.load import ReplicaLoad

BATCH_BAND = 2


@dataclass(frozen=True)
class Arrival:
    t: float
    input_tokens: int
    output_tokens: int
    band: int = 1  # 0 interactive, 1 standard, 2 batch

    @property
    def online(self) -> bool:
        return self.band < BATCH_BAND


def load_trace(
    path: str | Path, time_scale: float = 1.0, rate_scale: int = 1, limit_s: float | None = None
) -> list[Arrival]:
    """A CSV trace, its times from 0. ``time_scale`` < 1 compresses time; ``rate_scale`` > 1
    replays each request that many times (jittered within the second), multiplying the rate."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            ts = datetime.fromisoformat(r["TIMESTAMP"].strip()[:26]).timestamp()
            rows.append((ts, int(r["ContextTokens"]), int(r["GeneratedTokens"])))
    if not rows:
        return []
    t0 = rows[0][0]
    rng = random.Random(0)
    out = []
    for ts, i, o in rows:
        t = (ts - t0) * time_scale
        if limit_s is not None and t > limit_s:
            break
        for k in range(rate_scale):
            out.append(Arrival(t + (rng.random() if k else 0.0), i, o))
    return sorted(out, key=lambda a: a.t)


def poisson(rate: float, seconds: float, seed: int = 0, tokens: tuple[int, int] = (1000, 200)) -> list[Arrival]:
    rng = random.Random(seed)
    t, out = 0.0, list[Arrival]()
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            return out
        out.append(Arrival(t, tokens[0], tokens[1]))


def modulated(
    rate_at: Callable[[float], float], peak: float, seconds: float, seed: int = 0, tokens: tuple[int, int] = (1000, 200)
) -> list[Arrival]:
    """A non-homogeneous Poisson process (thinning): bursty or diurnal arrivals."""
    rng = random.Random(seed)
    t, out = 0.0, list[Arrival]()
    while True:
        t += rng.expovariate(peak)
        if t >= seconds:
            return out
        if rng.random() < rate_at(t) / peak:
            out.append(Arrival(t, tokens[0], tokens[1]))


def bursty(base: float, burst: float, seconds: float, period_s: float = 300, burst_s: float = 60, seed: int = 0):
    return modulated(lambda t: burst if (t % period_s) < burst_s else base, max(base, burst), seconds, seed)


def spiky(
    base: float,
    seconds: float,
    seed: int = 0,
    burst_s: tuple[float, float] = (10, 60),
    factor: tuple[float, float] = (8, 16),
    mean_gap_s: float = 300,
) -> list[Arrival]:
    """Poisson at ``base`` with bursts of ``burst_s`` seconds at ``factor`` x the base, at random times
    (exponential gaps of mean ``mean_gap_s`` between bursts)."""
    rng = random.Random(seed + 1000)
    bursts, t = [], rng.expovariate(1 / mean_gap_s)
    while t < seconds:
        length = rng.uniform(*burst_s)
        bursts.append((t, t + length, base * rng.uniform(*factor)))
        t += length + rng.expovariate(1 / mean_gap_s)

    def rate(t: float) -> float:
        return next((r for a, b, r in bursts if a <= t < b), base)

    return modulated(rate, base * factor[1], seconds, seed)


def diurnal(low: float, high: float, seconds: float, period_s: float = 3600, seed: int = 0):
    def rate(t: float) -> float:
        return low + (high - low) * (1 - math.cos(2 * math.pi * t / period_s)) / 2

    return modulated(rate, high, seconds, seed)


@dataclass(frozen=True)
class ReplicaModel:
    """One replica (for 120B, one whole pipeline group)."""

    slots: int = 32
    prefill_tokens_per_s: float = 8000.0
    decode_tokens_per_s: float = 40.0  # per request, at full batch
    cold_start_s: float = 60.0
    gpus: int = 1

    def service_s(self, a: Arrival) -> float:
        return a.input_tokens / self.prefill_tokens_per_s + a.output_tokens / self.decode_tokens_per_s


@dataclass
class _Replica:
    ready_at: float
    started_at: float
    running: list[tuple[float, bool, float]] = field(default_factory=list)  # (finish, batch line?, start)
    done: deque[tuple[float, float]] = field(default_factory=deque)  # (completion time, service s)
    draining: bool = False


@dataclass(frozen=True)
class SimResult:
    policy: str
    requests: int
    slo_attainment: float
    p50_wait_s: float
    p99_wait_s: float
    gpu_seconds: float
    scale_actions: int
    max_replicas: int


Policy = Callable[[ModelSignals, int, float], int]


class OssfleetPolicy:
    def __init__(self, cfg: PolicyConfig, state: PolicyState | None = None) -> None:
        self.cfg = cfg
        self.state = state or PolicyState()
        self.last_now = 0.0

    def memory(self) -> PolicyState:
        """The state as a policy that kept running would carry into the next window: its times moved
        back by this run's length (what it remembers of rates and bursts; no pending up/down timers)."""
        dt = self.last_now
        st = self.state
        return replace(
            st, up_since=None, down_since=None, idle_since=None, rates=tuple((t - dt, r) for t, r in st.rates),
            bursts=tuple((t - dt, r) for t, r in st.bursts),
            episode_start=None if st.episode_start is None else st.episode_start - dt,
            last_burst_at=None if st.last_burst_at is None else st.last_burst_at - dt,
            capacity_at=None if st.capacity_at is None else st.capacity_at - dt,
        )  # fmt: skip

    def __call__(self, s: ModelSignals, current: int, now: float) -> int:
        desired, self.state = decide(s, current, self.state, self.cfg, now)
        self.last_now = now
        return desired


class RayServeDefaultPolicy:
    """Ray Serve's request-based policy: replicas = ongoing requests (averaged over a look-back
    window) / target_ongoing_requests, with its up and down delays. Its default target is 2; a
    user tunes it to the replica (``target_ongoing_requests`` = 0.8 x slots)."""

    def __init__(
        self,
        min_replicas: int = 0,
        max_replicas: int = 8,
        target_ongoing_requests: float = 2.0,
        upscale_delay_s: float = 30.0,
        downscale_delay_s: float = 600.0,
        look_back_s: float = 30.0,
    ) -> None:
        self.min, self.max = min_replicas, max_replicas
        self.target = target_ongoing_requests
        self.up_delay, self.down_delay, self.look_back = upscale_delay_s, downscale_delay_s, look_back_s
        self.samples: deque[tuple[float, int]] = deque()
        self.up_since: float | None = None
        self.down_since: float | None = None

    def __call__(self, s: ModelSignals, current: int, now: float) -> int:
        # In Ray Serve requests are pushed to replicas, so queued ones count as ongoing.
        self.samples.append((now, s.running + s.waiting))
        while self.samples and self.samples[0][0] < now - self.look_back:
            self.samples.popleft()
        ongoing = sum(v for _, v in self.samples) / len(self.samples)
        want = max(self.min, min(self.max, math.ceil(ongoing / self.target)))
        if current == 0 and s.waiting:
            want = max(want, 1)  # Serve scales from zero as soon as a request arrives
            return want
        if want > current:
            self.down_since = None
            self.up_since = self.up_since if self.up_since is not None else now
            return want if now - self.up_since >= self.up_delay else current
        if want < current:
            self.up_since = None
            self.down_since = self.down_since if self.down_since is not None else now
            return want if now - self.down_since >= self.down_delay else current
        self.up_since = self.down_since = None
        return current


class QueueLengthPolicy:
    """A KEDA Redis scaler (list length) behind a Kubernetes HPA: replicas = ceil(waiting /
    ``list_length``), up at once, down after the HPA's stabilization window (the highest
    recommendation of its last ``stabilization_s``), one replica while anything waited within
    KEDA's ``cooldown_s``, zero after it. It sees the queue only, not what runs."""

    def __init__(
        self, max_replicas: int, list_length: int = 8, stabilization_s: float = 300.0, cooldown_s: float = 300.0
    ) -> None:
        self.max = max_replicas
        self.list_length = list_length
        self.stabilization_s, self.cooldown_s = stabilization_s, cooldown_s
        self.recs: deque[tuple[float, int]] = deque()
        self.last_active: float | None = None

    def __call__(self, s: ModelSignals, current: int, now: float) -> int:
        online = s.waiting - s.waiting_batch
        if s.waiting:
            self.last_active = now
        self.recs.append((now, min(self.max, math.ceil(online / self.list_length))))
        while self.recs[0][0] < now - self.stabilization_s:
            self.recs.popleft()
        want = max(r for _, r in self.recs)
        active = self.last_active is not None and now - self.last_active < self.cooldown_s
        return max(want, 1) if active else want


class OraclePolicy:
    """Clairvoyant: knows every arrival ahead and pays the same cold start. At each decision it runs
    the replicas that the requests in service over the next cold start (each served at once, for its
    service time) fill, at full slots, and drops the rest at once."""

    def __init__(self, arrivals: list[Arrival], model: ReplicaModel, decide_every_s: float = 1.0) -> None:
        self.lead = model.cold_start_s + decide_every_s
        inflight: dict[int, int] = {}
        for a in arrivals:
            for sec in range(int(a.t), int(a.t + model.service_s(a)) + 1):
                inflight[sec] = inflight.get(sec, 0) + 1
        self.need = {sec: math.ceil(n / model.slots) for sec, n in inflight.items()}

    def __call__(self, s: ModelSignals, current: int, now: float) -> int:
        ahead = range(int(now), int(now + self.lead) + 1)
        return max((self.need.get(sec, 0) for sec in ahead), default=0)


class StaticPolicy:
    def __init__(self, replicas: int) -> None:
        self.replicas = replicas

    def __call__(self, s: ModelSignals, current: int, now: float) -> int:
        return self.replicas


def static_peak_replicas(arrivals: list[Arrival], model: ReplicaModel, window_s: float = 10.0) -> int:
    """Replicas for the busiest window's arrival rate (Little's law over the slots)."""
    if not arrivals:
        return 0
    counts: dict[int, int] = {}
    for a in arrivals:
        counts[int(a.t // window_s)] = counts.get(int(a.t // window_s), 0) + 1
    peak_rate = max(counts.values()) / window_s
    mean_service = sum(model.service_s(a) for a in arrivals) / len(arrivals)
    return max(1, math.ceil(peak_rate * mean_service / model.slots))


def simulate(
    arrivals: list[Arrival],
    policy: Policy,
    model: ReplicaModel,
    *,
    name: str = "policy",
    slo_wait_s: float = 2.0,
    tick_s: float = 0.25,
    decide_every_s: float = 1.0,
    initial_replicas: int = 0,
    rate_window_s: float = 30.0,
    arrival_window_s: float = 10.0,
) -> SimResult:
    queue: deque[Arrival] = deque()  # online requests, FIFO
    batch: deque[Arrival] = deque()  # batch-band lines, served when no online request waits
    arrived: deque[float] = deque()  # online arrival times within the last rate window
    replicas = [_Replica(ready_at=0.0, started_at=0.0) for _ in range(initial_replicas)]
    waits: list[float] = []
    gpu_s = 0.0
    actions = 0
    max_seen = len(replicas)
    i, now, next_decision = 0, 0.0, 0.0
    end = (arrivals[-1].t if arrivals else 0.0) + 3600.0
    while now <= end:
        while i < len(arrivals) and arrivals[i].t <= now:
            a = arrivals[i]
            if a.online:
                queue.append(a)
                arrived.append(a.t)
            else:
                batch.append(a)
            i += 1
        while arrived and arrived[0] < now - arrival_window_s:
            arrived.popleft()
        for r in replicas:
            while r.running and min(r.running)[0] <= now:
                first = min(r.running)
                r.running.remove(first)
                r.done.append((first[0], first[0] - first[2]))
            while r.done and r.done[0][0] < now - rate_window_s:
                r.done.popleft()
        replicas = [r for r in replicas if not (r.draining and not r.running)]
        for r in replicas:
            if r.draining or r.ready_at > now:
                continue
            while (queue or batch) and len(r.running) < model.slots:
                if queue:
                    a = queue.popleft()
                    waits.append(now - a.t)
                else:
                    a = batch.popleft()
                r.running.append((now + model.service_s(a), not a.online, now))
        if now >= next_decision:
            live = [r for r in replicas if not r.draining]
            ready = [r for r in live if r.ready_at <= now]
            signals = ModelSignals(
                waiting=len(queue) + len(batch),
                oldest_wait_s=now - queue[0].t if queue else 0.0,
                starting=len(live) - len(ready),
                replicas=tuple(
                    ReplicaLoad(
                        len(r.running),
                        model.slots,
                        len(r.done) / min(rate_window_s, max(now - r.ready_at, 1e-9)),
                        running_batch=sum(1 for _, b, _ in r.running if b),
                        completions=len(r.done),
                        service_s=sum(d for _, d in r.done) / len(r.done) if r.done else None,
                    )
                    for r in ready
                ),
                waiting_batch=len(batch),
                arrivals_per_s=len(arrived) / min(arrival_window_s, max(now, 1.0)),
            )
            desired = policy(signals, len(live), now)
            if desired > len(live):
                replicas += [
                    _Replica(ready_at=now + model.cold_start_s, started_at=now) for _ in range(desired - len(live))
                ]
                actions += 1
            elif desired < len(live):
                # Idle replicas go first; the others drain (finish what they run).
                victims = sorted(live, key=lambda r: (len(r.running), -r.started_at))[: len(live) - desired]
                for r in victims:
                    r.draining = True
                actions += 1
            max_seen = max(max_seen, len([r for r in replicas if not r.draining]))
            next_decision = now + decide_every_s
        gpu_s += len(replicas) * model.gpus * tick_s
        # The run ends when the trace is served; GPU time after that is not the policy's to answer for.
        if i >= len(arrivals) and not queue and not batch and all(not r.running for r in replicas):
            break
        now += tick_s
    waits.sort()

    def q(p: float) -> float:
        return waits[min(len(waits) - 1, int(p * len(waits)))] if waits else 0.0

    met = sum(1 for w in waits if w <= slo_wait_s)
    return SimResult(
        policy=name,
        requests=len(waits),
        slo_attainment=met / len(waits) if waits else 1.0,
        p50_wait_s=q(0.5),
        p99_wait_s=q(0.99),
        gpu_seconds=gpu_s,
        scale_actions=actions,
        max_replicas=max_seen,
    )
