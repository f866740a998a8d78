"""Autoscaling benchmark: policies side by side on a real arrival trace and bursty synthetic ones.

First it measures the cold start on the real path (bench/cold_start.py, in
processes of their own: ossfleet's engine, with and without the imports done
ahead, and vLLM where the vLLM venv exists), and derives from it the cold start
of a gpt-oss-20b replica on one GPU (``PlatformConfig.cold_start_s``: the
measured start-up, the checkpoint read from one EFS client, moved over PCIe);
``--cold-start-s`` skips the measurement and simulates the figure given. Then
it replays, in the simulator (autoscaling/simulator.py), with one replica model
(gpt-oss-20b on one GPU: 32 slots, 8k prompt tok/s, 40 output tok/s per
request, that cold start; SLO: an online request waits <= 2 s):

- ``azure_conv``: the Azure LLM conversation trace (../shared/traces, or
  ``--trace``), each request replayed ``--rate-scale`` times;
- ``diurnal``: 5 to 60 req/s and back over the run;
- ``bursty_steps``: 10 req/s with steps to 50 req/s;
- ``spiky``: Poisson at 4 req/s with bursts of 10-60 s at 8-16x, at random times;

against these policies, every one starting warm with the static peak count:

- ``ossfleet``: autoscaling/policy.py (the backlog predicted a cold start ahead, recurring bursts held,
  up at once, down after a minute);
- ``static_peak``: the busiest 10 s window's replicas, all the time;
- ``ray_serve_tuned``: Ray Serve's request-based policy as a user would tune
  it for a 32-slot replica (``target_ongoing_requests`` = 0.8 x 32, its default
  30 s up / 600 s down delays); ``ray_serve_default`` (target 2) beside it;
- ``queue_length``: a KEDA Redis list-length scaler (8 waiting per replica)
  behind an HPA (300 s down stabilization, 300 s cooldown to zero);
- ``oracle``: knows every arrival ahead and pays the same cold start (the
  lower bound on GPU-seconds at the SLO).

The last line is one JSON object: ``cold_start`` (``engines.<engine>.cold`` and
``.preloaded``: seconds per phase; ``derived_gpu``; ``simulator_s``, the figure
simulated), ``traces.<trace>.policies.<policy>.slo_attainment`` and
``.gpu_seconds`` (and p50/p99 wait, scale actions), the targets per trace, and
the ratios they are judged by.

    python bench/autoscaling.py --quick
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # bench/autoscaling.py must not shadow the autoscaling package

import argparse
import json
import subprocess
from dataclasses import asdict
from pathlib import Path

from autoscaling.policy import PolicyConfig
from autoscaling.simulator import (
    OraclePolicy,
    OssfleetPolicy,
    QueueLengthPolicy,
    RayServeDefaultPolicy,
    ReplicaModel,
    StaticPolicy,
    bursty,
    diurnal,
    load_trace,
    simulate,
    spiky,
    static_peak_replicas,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = ROOT.parent / "shared" / "traces" / "azure_llm_conv_2023-11-16.csv"


def ossfleet_config(model: ReplicaModel, peak: int, slo: float) -> PolicyConfig:
    return PolicyConfig(
        min_replicas=0, max_replicas=4 * peak, target_wait_s=slo / 2, idle_to_zero_s=300,
        cold_start_s=model.cold_start_s, default_slots=model.slots,
    )  # fmt: skip


def compare(name: str, arrivals: list, model: ReplicaModel, slo: float) -> dict:
    peak = static_peak_replicas(arrivals, model)
    cfg = ossfleet_config(model, peak, slo)
    # A service already up remembers the traffic it saw: ossfleet starts with the state it had at the
    # end of a previous window of the same traffic (the trace replayed once before), as every policy
    # starts with the static peak's replicas. ``ossfleet_cold`` starts with no memory.
    warm = OssfleetPolicy(cfg)
    simulate(arrivals, warm, model, slo_wait_s=slo, initial_replicas=peak)
    policies = {
        "ossfleet": OssfleetPolicy(cfg, warm.memory()),
        "ossfleet_cold": OssfleetPolicy(cfg),
        "static_peak": StaticPolicy(peak),
        "ray_serve_tuned": RayServeDefaultPolicy(0, 4 * peak, target_ongoing_requests=0.8 * model.slots),
        "ray_serve_default": RayServeDefaultPolicy(0, 4 * peak),
        "queue_length": QueueLengthPolicy(4 * peak),
        "oracle": OraclePolicy(arrivals, model),
    }
    runs = {}
    for policy_name, policy in policies.items():
        r = simulate(arrivals, policy, model, name=policy_name, slo_wait_s=slo, initial_replicas=peak)
        runs[policy_name] = r
        print(
            f"{name:13s} {policy_name:18s} SLO {r.slo_attainment:7.2%}  p99 wait {r.p99_wait_s:7.2f} s  "
            f"GPU-s {r.gpu_seconds:9.0f}  max replicas {r.max_replicas}",
            flush=True,
        )
    ours, static, oracle, tuned = runs["ossfleet"], runs["static_peak"], runs["oracle"], runs["ray_serve_tuned"]
    targets = {
        "slo_ge_99pct": ours.slo_attainment >= 0.99,
        "gpu_le_static": ours.gpu_seconds <= static.gpu_seconds,
        # Fewer GPU-seconds than the tuned Ray policy wherever its SLO is no better than ours.
        "beats_ray_serve_tuned": ours.gpu_seconds < tuned.gpu_seconds or tuned.slo_attainment > ours.slo_attainment,
    }
    if name == "diurnal":
        targets["gpu_le_75pct_of_static"] = ours.gpu_seconds <= 0.75 * static.gpu_seconds
    if name in ("diurnal", "azure_conv"):
        targets["gpu_le_1_3x_oracle"] = ours.gpu_seconds <= 1.3 * oracle.gpu_seconds
    return {
        "requests": len(arrivals),
        "seconds": round(arrivals[-1].t, 1) if arrivals else 0,
        "static_peak_replicas": peak,
        "policies": {
            n: {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(r).items() if k != "policy"}
            for n, r in runs.items()
        },
        "ossfleet_gpu_seconds_vs_static": round(ours.gpu_seconds / static.gpu_seconds, 3),
        "ossfleet_gpu_seconds_vs_oracle": round(ours.gpu_seconds / oracle.gpu_seconds, 3),
        "targets": targets,
    }


def run_cold_start(python: Path, engine: str, preload: bool) -> dict | None:
    """bench/cold_start.py in a process of its own (its own Ray), with ``python`` (the vLLM venv's for vLLM)."""
    cmd = [str(python), str(ROOT / "bench" / "cold_start.py"), "--quick", "--engine", engine]
    cmd += ["--preload"] if preload else []
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"cold start ({engine}, preload={preload}) failed: {proc.stderr[-2000:]}", flush=True)
        return None
    return json.loads(lines[-1])


def cold_start(measure: bool) -> dict:
    """The cold start, measured here for both engines (and with imports preloaded), and the figure the
    simulator uses: a gpt-oss-20b replica on one GPU, ``PlatformConfig.cold_start_s`` with ``startup_s`` the
    measured start of the engine that serves it (vLLM, else ossfleet's), the weights read from one EFS client
    and moved over PCIe."""
    from ossfleet.config import parse_config

    out: dict = {"engines": {}}
    if measure:
        runs = [(Path(sys.executable), "batched", False), (Path(sys.executable), "batched", True)]
        vllm_python = ROOT / ".venv-vllm" / "bin" / "python"
        if vllm_python.exists():
            runs.append((vllm_python, "vllm", False))
        for python, engine, preload in runs:
            r = run_cold_start(python, engine, preload)
            if r is not None:
                out["engines"].setdefault(engine, {})["preloaded" if preload else "cold"] = r["phases"]
    measured = out["engines"].get("vllm", out["engines"].get("batched", {})).get("cold")
    cfg = parse_config({"models": [{"name": "gpt-oss-20b", "spec": "gpt-oss-20b", "path": "/nonexistent",
                                    "device": "cuda", "gpu_memory_gib": 80, "engine": "vllm"}]}, "<bench>")  # fmt: skip
    a = cfg.autoscaling
    startup = measured["total_s"] - measured["weights_s"] if measured else a.startup_s
    m = cfg.models[0]
    derived = cfg.model_copy(update={"autoscaling": a.model_copy(update={"startup_s": startup})}).cold_start_s(m)
    out["derived_gpu"] = {
        "model": "gpt-oss-20b, 1 GPU of 80 GiB, vLLM", "startup_s": round(startup, 2),
        "startup_source": "measured here (vLLM)" if "vllm" in out["engines"] else
                          ("measured here (ossfleet's engine)" if measured else "config default"),
        "weights_read_gib_s": a.weights_read_gib_s, "host_to_device_gib_s": a.host_to_device_gib_s,
        "cold_start_s": round(derived, 2),
    }  # fmt: skip
    out["simulator_s"] = round(derived, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="20 minutes of each trace instead of an hour")
    ap.add_argument("--trace", default=str(DEFAULT_TRACE))
    ap.add_argument("--rate-scale", type=int, default=8, help="replay each request of the real trace this many times")
    ap.add_argument("--cold-start-s", type=float, help="simulate this cold start; measure none")
    args = ap.parse_args()
    seconds = 1200 if args.quick else 3600
    if args.cold_start_s is not None:
        cold = {"engines": {}, "simulator_s": args.cold_start_s, "derived_gpu": None}
    else:
        cold = cold_start(measure=True)
    model = ReplicaModel(cold_start_s=cold["simulator_s"])
    slo = 2.0
    traces = {
        "azure_conv": load_trace(args.trace, rate_scale=args.rate_scale, limit_s=seconds),
        "diurnal": diurnal(5, 60, seconds, period_s=seconds, seed=1),
        "bursty_steps": bursty(10, 50, seconds, period_s=seconds / 4, burst_s=seconds / 12, seed=2),
        "spiky": spiky(4, seconds, seed=3),
    }
    out = {
        "slo_wait_s": slo,
        "cold_start": cold,
        "replica_model": asdict(model),
        "traces": {name: compare(name, arr, model, slo) for name, arr in traces.items()},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
