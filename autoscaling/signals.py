"""Scaling signals at their sources: queue depth from Redis, GPU utilization from NVML.

Replicas report their own load (running requests, slots, completions per
second, KV-cache use, GPU utilization) through Ray Serve's
``record_autoscaling_stats``; the policy adapter reads those from the
autoscaling context. GPU utilization is *absent* (None) where there is no GPU
or no NVML, never zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ossfleet.control.keyspace import keyspace


@dataclass(frozen=True)
class QueueDepth:
    waiting: int  # requests waiting, every band
    waiting_batch: int  # of those, in the batch band (the lowest, when there are several)
    oldest_online_s: float  # the oldest online (non-batch) request's wait
    arrivals_online: int  # online requests ever admitted (a counter: its increments are the arrivals)
    adapters_waiting: int = 0  # distinct LoRA adapters among the oldest waiting online requests (if counted)


# Waiting online requests per band whose adapters are counted: a bounded sample, the oldest first.
ADAPTER_SAMPLE = 256


def queue_depth(
    client: Any, namespace: str, model: str, bands: int, now: float | None = None, adapters: bool = False
) -> QueueDepth:
    """A model's queue in Redis, in one round trip (two with ``adapters``: the distinct LoRA adapters
    the oldest ``ADAPTER_SAMPLE`` waiting online requests of each band use)."""
    keys = keyspace(namespace)
    batch = bands - 1 if bands > 1 else None
    pipe = client.pipeline(transaction=False)
    for b in range(bands):
        pipe.zcard(keys.wait(model, b))
        pipe.zrange(keys.wait(model, b), 0, 0, withscores=True)
    pipe.hgetall(keys.arrivals(model))
    res = pipe.execute()
    counts = [int(res[2 * b]) for b in range(bands)]
    heads = [res[2 * b + 1][0][1] for b in range(bands) if res[2 * b + 1] and b != batch]
    now_ms = (now if now is not None else time.time()) * 1000
    oldest = max(0.0, (now_ms - min(heads)) / 1000) if heads else 0.0
    arrivals = {int(k): int(v) for k, v in (res[-1] or {}).items()}
    distinct = 0
    if adapters:
        pipe = client.pipeline(transaction=False)
        for b in range(bands):
            if b != batch:
                pipe.zrange(keys.wait(model, b), 0, ADAPTER_SAMPLE - 1)
        ids = [i for band in pipe.execute() for i in band]
        pipe = client.pipeline(transaction=False)
        for i in ids:
            pipe.hget(keys.req(model, i.decode() if isinstance(i, bytes) else str(i)), "adapter")
        distinct = len({a for a in pipe.execute() if a})
    return QueueDepth(
        waiting=sum(counts),
        waiting_batch=counts[batch] if batch is not None else 0,
        oldest_online_s=oldest,
        arrivals_online=sum(v for b, v in arrivals.items() if b != batch),
        adapters_waiting=distinct,
    )


def gpu_utilization() -> float | None:
    """Mean utilization (0..1) of the GPUs this process sees, through NVML; None without them."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        n = pynvml.nvmlDeviceGetCount()
        if n == 0:
            return None
        rates = [pynvml.nvmlDeviceGetUtilizationRates(pynvml.nvmlDeviceGetHandleByIndex(i)).gpu for i in range(n)]
        return sum(rates) / n / 100.0
    except Exception:  # no driver, no device: absent, not zero
        return None
