"""The Ray Serve adapter: ossfleet's policy as a custom Serve autoscaling policy.

Serve's controller instantiates :class:`OssfleetServePolicy` once per model
deployment with the ``policy_kwargs`` the application builder set, and calls
it with an ``AutoscalingContext`` on every autoscaling tick. It gathers the
signals (each replica's ``record_autoscaling_stats``; the model's queue depth
per band and its online arrival counter from Redis, whose increments over the
last ``ARRIVAL_WINDOW_S`` give the arrival rate), runs the pure ``decide`` and
returns the replica count with the policy's state, which Serve hands back on
the next call. If Redis cannot be read it keeps the current count rather than
guess.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

from autoscaling.policy import ModelSignals, PolicyConfig, PolicyState, decide
from autoscaling.signals import queue_depth
from ossfleet.protocol.load import ReplicaLoad

log = logging.getLogger("ossfleet.autoscaling")

POLICY_FUNCTION = "autoscaling.serve_policy:OssfleetServePolicy"
STATS = ("running", "max_slots", "requests_per_s", "kv_cache_used", "gpu_utilization", "running_batch",
         "completions", "service_s")  # fmt: skip
ARRIVAL_WINDOW_S = 10.0


def arrival_rate(samples: list[list[float]], now: float, count: int) -> tuple[float | None, list[list[float]]]:
    """The rate of a counter over the last ``ARRIVAL_WINDOW_S`` from its samples ([time, count], oldest
    first), and the samples to keep; None until a second has been seen."""
    samples = [x for x in samples if x[0] >= now - ARRIVAL_WINDOW_S and x[1] <= count] + [[now, float(count)]]
    t0, c0 = samples[0]
    return ((count - c0) / (now - t0) if now - t0 >= 1.0 else None), samples


class OssfleetServePolicy:
    def __init__(
        self,
        redis_url: str,
        namespace: str,
        model: str,
        bands: int,
        password_env: str | None = None,
        config_path: str | None = None,
        **policy: Any,
    ) -> None:
        if not redis_url and config_path:  # a rendered Serve config: the cluster's own config file has it
            from ossfleet.config import load_config

            redis_url = load_config(config_path).redis.url or ""
        self.redis_url = redis_url
        self.password_env = password_env
        self.namespace = namespace
        self.model = model
        self.bands = bands
        known = PolicyConfig.__dataclass_fields__  # a deployment's kwargs may name a retired setting
        self.cfg = PolicyConfig(**{k: v for k, v in policy.items() if k in known})
        self._client: Any = None

    def _redis(self) -> Any:
        if self._client is None:
            from ossfleet.config import RedisConfig
            from ossfleet.redisdb import connect

            # The project's connector: a redis+cluster:// URL gets a cluster client (redis.Redis.from_url
            # raised on it, and the policy then kept the replica count forever).
            self._client = connect(self.redis_url, RedisConfig(password_env=self.password_env), timeout_s=1.0)
        return self._client

    @staticmethod
    def replica_loads(metrics: dict[str, dict[Any, float]] | None) -> tuple[ReplicaLoad, ...]:
        """Per-replica loads from Serve's aggregated custom metrics ({metric: {replica: value}})."""
        metrics = metrics or {}
        replicas = set().union(*(metrics.get(k, {}).keys() for k in STATS))
        out = []
        for rid in replicas:
            out.append(ReplicaLoad.of({k: metrics.get(k, {}).get(rid) for k in STATS}))
        return tuple(out)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        now = ctx.current_time or time.time()
        current = ctx.target_num_replicas
        try:
            q = queue_depth(self._redis(), self.namespace, self.model, self.bands, now,
                            adapters=self.cfg.adapters_per_replica > 0)  # fmt: skip
        except Exception as e:
            log.warning("event=autoscaling_redis_unreadable model=%s error=%r", self.model, type(e).__name__)
            return current, ctx.policy_state
        rate, samples = arrival_rate(ctx.policy_state.get("arrivals", []), now, q.arrivals_online)
        loads = self.replica_loads(ctx.aggregated_metrics)
        signals = ModelSignals(
            q.waiting, q.oldest_online_s, loads, waiting_batch=q.waiting_batch, arrivals_per_s=rate,
            adapters_waiting=q.adapters_waiting, starting=max(0, current - len(loads)),
        )  # fmt: skip
        state = policy_state(ctx.policy_state.get("ossfleet", {}))
        desired, state = decide(signals, current, state, self.cfg, now)
        if desired != current:
            log.info(
                "event=autoscale model=%s from=%d to=%d waiting=%d waiting_batch=%d oldest_wait_s=%.1f "
                "running=%d arrivals_per_s=%.2f",
                self.model, current, desired, q.waiting, q.waiting_batch, q.oldest_online_s, signals.running,
                rate or 0.0,
            )  # fmt: skip
        return desired, {**ctx.policy_state, "ossfleet": asdict(state), "arrivals": samples}


def policy_state(d: dict[str, Any]) -> PolicyState:
    """The policy's state from its JSON-ish form (tuples come back as lists)."""
    d = {k: v for k, v in d.items() if k in PolicyState.__dataclass_fields__}  # a state of an older policy
    for k in ("rates", "bursts"):
        if k in d:
            d[k] = tuple(tuple(x) for x in d[k])
    if "episodes" in d:
        d["episodes"] = tuple(d["episodes"])
    return PolicyState(**d)
