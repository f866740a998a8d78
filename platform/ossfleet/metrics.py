"""Prometheus metrics, exported through Ray's metrics agent (Prometheus adds the ``ray_`` prefix).

Each function records one fact; metrics are created on first use in the
process that records them. Outside a Ray worker (unit tests, the CLI) they
record nothing. Labels never carry a prompt, a completion or a key.
"""

from __future__ import annotations

from typing import Any

_metrics: dict[str, Any] = {}

_LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]


def _get(kind: str, name: str, description: str, tags: tuple[str, ...]) -> Any:
    import ray

    if not ray.is_initialized():  # checked on every use: a metric made under a Ray since shut down is dead
        _metrics.clear()
        return None
    m = _metrics.get(name)
    if m is not None:
        return m
    from ray.util import metrics

    if kind == "counter":
        m = metrics.Counter(name, description=description, tag_keys=tags)
    elif kind == "gauge":
        m = metrics.Gauge(name, description=description, tag_keys=tags)
    else:
        m = metrics.Histogram(name, description=description, boundaries=_LATENCY_BUCKETS, tag_keys=tags)
    _metrics[name] = m
    return m


def _inc(name: str, description: str, value: float, **tags: str) -> None:
    m = _get("counter", name, description, tuple(tags))
    if m is not None and value > 0:
        m.inc(value, tags=tags)


def _set(name: str, description: str, value: float, **tags: str) -> None:
    m = _get("gauge", name, description, tuple(tags))
    if m is not None:
        m.set(value, tags=tags)


def _observe(name: str, description: str, value: float, **tags: str) -> None:
    m = _get("histogram", name, description, tuple(tags))
    if m is not None:
        m.observe(value, tags=tags)


# -- gateway ---------------------------------------------------------------------------------


def request(tenant: str, model: str, band: str, outcome: str) -> None:
    """A request's admission: outcome is ``admitted`` or the refusal's code."""
    _inc(
        "ossfleet_requests_total",
        "Requests by tenant, model, band and admission outcome",
        1,
        tenant=tenant,
        model=model,
        band=band,
        outcome=outcome,
    )


def finished(tenant: str, model: str, outcome: str, cost_usd: float, output_tokens: int) -> None:
    """A request's end as its client saw it: finish reason, or ``error``."""
    _inc(
        "ossfleet_finished_total", "Requests finished, by finish reason", 1, tenant=tenant, model=model, outcome=outcome
    )
    _inc("ossfleet_cost_usd_total", "Spend settled, in USD", cost_usd, tenant=tenant, model=model)
    _inc("ossfleet_output_tokens_total", "Tokens generated and delivered", output_tokens, tenant=tenant, model=model)


def time_to_first_token(model: str, seconds: float) -> None:
    _observe("ossfleet_time_to_first_token_seconds", "From admission to the first delta", seconds, model=model)


def inter_token(model: str, seconds: float) -> None:
    _observe("ossfleet_inter_token_seconds", "Between consecutive deltas of a stream", seconds, model=model)


def budget_left(tenant: str, usd: float) -> None:
    _set("ossfleet_budget_left_usd", "Budget left in the current period", usd, tenant=tenant)


# -- replicas ----------------------------------------------------------------------------------


def tokens_per_s(model: str, replica: str, value: float) -> None:
    _set("ossfleet_replica_tokens_per_second", "Tokens generated per second", value, model=model, replica=replica)


def running(model: str, replica: str, value: float) -> None:
    _set("ossfleet_replica_running_requests", "Requests running on a replica", value, model=model, replica=replica)


def gpu_utilization(model: str, replica: str, value: float) -> None:
    _set(
        "ossfleet_replica_gpu_utilization",
        "GPU utilization (0-1), where a GPU exists",
        value,
        model=model,
        replica=replica,
    )


def queue(model: str, waiting_by_band: dict[str, int], oldest_wait_s: float) -> None:
    for band, n in waiting_by_band.items():
        _set("ossfleet_queue_depth", "Requests waiting in Redis", n, model=model, band=band)
    _set("ossfleet_queue_oldest_wait_seconds", "Age of the oldest waiting request", oldest_wait_s, model=model)


def leases(model: str, requeued: int, retried: int, dead: int) -> None:
    """What the reaper did: expired leases requeued, failures retried, requests dead-lettered."""
    for kind, n in (("expired_requeued", requeued), ("retried", retried), ("dead_lettered", dead)):
        _inc("ossfleet_lease_events_total", "Lease expiries, retries and dead letters", n, model=model, kind=kind)
