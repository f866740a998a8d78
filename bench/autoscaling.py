"""Autoscaling benchmark: policies side by side on a real, bursty arrival trace.

Replays the Azure LLM conversation trace (../shared/traces, or --trace), and
synthetic diurnal and step-burst traces, in the simulator
(autoscaling/simulator.py) against three policies, with the same
replica model (gpt-oss-20b on one GPU: 32 slots, 8k prompt tok/s, 40 output
tok/s per request, 60 s cold start):

- ossfleet's policy (autoscaling/policy.py);
- Ray Serve's default request-based policy (target_ongoing_requests=2,
  30 s up / 600 s down delays, 30 s look-back);
- static provisioning at the trace's peak (busiest 10 s window).

It prints each one's SLO attainment (wait <= 2 s), p50/p99 wait and
GPU-seconds. Targets: ossfleet meets the SLO for >= 99% of requests with <= 70%
of static peak's GPU-seconds, and beats Ray Serve's default on SLO attainment
at equal or lower GPU-seconds. The last line printed is one JSON object.

    python bench/autoscaling.py --quick
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # bench/queue.py must not shadow the standard library's queue

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from autoscaling.policy import PolicyConfig
from autoscaling.simulator import (
    OssfleetPolicy,
    RayServeDefaultPolicy,
    ReplicaModel,
    StaticPolicy,
    bursty,
    diurnal,
    load_trace,
    simulate,
    static_peak_replicas,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = ROOT.parent / "shared" / "traces" / "azure_llm_conv_2023-11-16.csv"


def compare(name: str, arrivals: list, model: ReplicaModel, slo: float) -> dict:
    peak = static_peak_replicas(arrivals, model)
    cfg = PolicyConfig(
        min_replicas=0,
        max_replicas=4 * peak,
        target_wait_s=slo / 2,
        upscale_delay_s=5,
        downscale_delay_s=60,
        idle_to_zero_s=300,
        cold_start_s=model.cold_start_s,
        target_utilization=0.8,
    )
    # Every policy starts warm, with the static peak count running (a trace is a
    # window of a service already up); the dynamic ones then scale as they see fit.
    runs = [
        simulate(arrivals, OssfleetPolicy(cfg), model, name="ossfleet", slo_wait_s=slo, initial_replicas=peak),
        simulate(
            arrivals,
            RayServeDefaultPolicy(0, 4 * peak),
            model,
            name="ray_serve_default",
            slo_wait_s=slo,
            initial_replicas=peak,
        ),
        simulate(arrivals, StaticPolicy(peak), model, name="static_peak", slo_wait_s=slo, initial_replicas=peak),
    ]
    for r in runs:
        print(
            f"{name:14s} {r.policy:18s} SLO {r.slo_attainment:7.2%}  p99 wait {r.p99_wait_s:7.2f} s  "
            f"GPU-s {r.gpu_seconds:9.0f}  max replicas {r.max_replicas}",
            flush=True,
        )
    ours, ray_default, static = runs
    return {
        "requests": len(arrivals),
        "seconds": round(arrivals[-1].t, 1) if arrivals else 0,
        "static_peak_replicas": peak,
        "policies": {
            r.policy: {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(r).items()} for r in runs
        },
        "ossfleet_gpu_seconds_vs_static": round(ours.gpu_seconds / static.gpu_seconds, 3),
        "targets": {
            "slo_ge_99pct": ours.slo_attainment >= 0.99,
            "gpu_le_70pct_of_static": ours.gpu_seconds <= 0.7 * static.gpu_seconds,
            "beats_ray_default": ours.slo_attainment > ray_default.slo_attainment
            and ours.gpu_seconds <= ray_default.gpu_seconds,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="20 minutes of each trace instead of an hour")
    ap.add_argument("--trace", default=str(DEFAULT_TRACE))
    ap.add_argument("--rate-scale", type=int, default=8, help="replay each request of the real trace this many times")
    args = ap.parse_args()
    seconds = 1200 if args.quick else 3600
    model = ReplicaModel()
    slo = 2.0
    traces = {
        "azure_conv": load_trace(args.trace, rate_scale=args.rate_scale, limit_s=seconds),
        "diurnal": diurnal(5, 60, seconds, period_s=seconds, seed=1),
        "bursty_steps": bursty(10, 50, seconds, period_s=seconds / 4, burst_s=seconds / 12, seed=2),
    }
    out = {
        "slo_wait_s": slo,
        "replica_model": asdict(model),
        "traces": {name: compare(name, arr, model, slo) for name, arr in traces.items()},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
