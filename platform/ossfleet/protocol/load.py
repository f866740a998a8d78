"""A replica's load: one type for the replica's worker, its Redis heartbeat, Serve's autoscaling metrics and
the autoscaling policy. Plain data with no imports, so the policy (which imports nothing else of ossfleet)
can share it.

On the wire (the heartbeat's JSON, Serve's ``record_autoscaling_stats``) it is a flat map of numbers:
:meth:`ReplicaLoad.metrics` writes it, leaving out what is unknown (None), and :meth:`ReplicaLoad.of`
reads it back, unknown names ignored (a replica of a newer version may report more).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

_INTS = ("running", "max_slots", "running_batch", "served", "completions", "adapters_held", "adapters_in_use",
         "adapter_loads")  # fmt: skip


@dataclass(frozen=True)
class ReplicaLoad:
    running: int  # requests running (leased and started here)
    max_slots: int
    requests_per_s: float  # measured completions per second (0: none yet)
    gpu_utilization: float | None = None  # 0..1, None where no GPU (absent, not zero)
    kv_cache_used: float | None = None  # 0..1, None where unknown
    running_batch: int = 0  # of ``running``, batch-band lines
    completions: int | None = None  # completions ``requests_per_s`` was measured over (None: unknown)
    # Mean seconds a completed request held its slot, over the same window (None: unknown).
    service_s: float | None = None
    tokens_per_s: float = 0.0  # output tokens per second, the engine's
    served: int = 0  # requests completed since the replica started
    adapters_held: int | None = None  # LoRA adapters loaded (None: the replica serves none)
    adapters_in_use: int | None = None
    adapter_loads: int | None = None

    def metrics(self) -> dict[str, float]:
        """The load as a flat map of numbers, unknown values left out."""
        return {f.name: float(v) for f in fields(self) if (v := getattr(self, f.name)) is not None}

    @classmethod
    def of(cls, m: Mapping[str, float | None]) -> ReplicaLoad:
        """The load a map of numbers describes (a heartbeat's, Serve's per-replica metrics)."""
        kw: dict[str, int | float | None] = {}
        for f in fields(cls):
            v = m.get(f.name)
            if v is None:
                continue
            kw[f.name] = int(v) if f.name in _INTS else float(v)
        kw.setdefault("running", 0)
        kw.setdefault("max_slots", 0)
        kw.setdefault("requests_per_s", 0.0)
        return cls(**kw)  # type: ignore[arg-type]
