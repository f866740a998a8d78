"""Scaling signals at their sources: queue depth from Redis, GPU utilization from NVML.

Replicas report their own load (running requests, slots, completions per
second, KV-cache use, GPU utilization) through Ray Serve's
``record_autoscaling_stats``; the policy adapter reads those from the
autoscaling context. GPU utilization is *absent* (None) where there is no GPU
or no NVML, never zero.
"""

from __future__ import annotations

import time
from typing import Any


def queue_depth(client: Any, namespace: str, model: str, bands: int, now: float | None = None) -> tuple[int, float]:
    """(requests waiting in every band, age of the oldest in seconds) for a model."""
    prefix = "{" + namespace + "}:"
    pipe = client.pipeline(transaction=False)
    for b in range(bands):
        pipe.zcard(f"{prefix}wait:{model}:{b}")
        pipe.zrange(f"{prefix}wait:{model}:{b}", 0, 0, withscores=True)
    res = pipe.execute()
    waiting = sum(int(res[i]) for i in range(0, 2 * bands, 2))
    heads = [res[i][0][1] for i in range(1, 2 * bands, 2) if res[i]]
    now_ms = (now if now is not None else time.time()) * 1000
    oldest = max(0.0, (now_ms - min(heads)) / 1000) if heads else 0.0
    return waiting, oldest


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
