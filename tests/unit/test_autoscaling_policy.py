"""The autoscaling policy over scripted signal sequences (pure: the clock is passed in)."""

from __future__ import annotations

from autoscaling.policy import ModelSignals, PolicyConfig, PolicyState, ReplicaLoad, decide, demand
from autoscaling.simulator import (
    OssfleetPolicy,
    RayServeDefaultPolicy,
    ReplicaModel,
    StaticPolicy,
    diurnal,
    poisson,
    simulate,
    static_peak_replicas,
)

CFG = PolicyConfig(min_replicas=0, max_replicas=10, target_wait_s=2, upscale_delay_s=5, downscale_delay_s=60,
                   idle_to_zero_s=300, cold_start_s=30, default_slots=8, target_utilization=1.0)  # fmt: skip


def load(running: int, replicas: int, waiting: int = 0, oldest: float = 0.0, rps: float = 1.0) -> ModelSignals:
    per = [running // replicas + (1 if i < running % replicas else 0) for i in range(replicas)] if replicas else []
    return ModelSignals(waiting, oldest, tuple(ReplicaLoad(n, 8, rps if n else 0.0) for n in per))


def run(seq, current=1, cfg=CFG, dt=1.0):
    """Feed (signals) one per second; return the replica count after each decision."""
    state, out, now = PolicyState(), [], 0.0
    for s in seq:
        current, state = decide(s, current, state, cfg, now)
        out.append(current)
        now += dt
    return out


def test_steady_load_does_not_flap():
    # 20 requests running on 3 replicas of 8 slots, jittering by one or two.
    seq = [load(20 + (i % 3) - 1, 3) for i in range(600)]
    counts = run(seq, current=3)
    assert set(counts) == {3}


def test_a_surge_scales_up_within_one_decision():
    counts = run([load(8, 1, waiting=40, oldest=5.0)], current=1)
    assert counts[0] == demand(load(8, 1, waiting=40, oldest=5.0), CFG) > 1


def test_moderate_growth_waits_for_the_up_delay():
    seq = [load(14, 1, waiting=2, oldest=0.5)] * 8
    counts = run(seq, current=1)
    assert counts[:5] == [1] * 5 and counts[5] == 2


def test_idle_goes_to_zero_only_after_the_idle_time():
    seq = [load(0, 2)] * 400
    counts = run(seq, current=2)
    assert counts[59] == 2 and counts[60] == 1  # down to one after the down delay
    assert counts[298] == 1 and counts[300] == 0  # zero after idle_to_zero_s


def test_a_request_at_zero_replicas_scales_from_zero_at_once():
    counts = run([load(0, 0, waiting=1, oldest=0.0)], current=0)
    assert counts == [1]


def test_no_scale_down_while_a_gpu_is_saturated():
    hot = ModelSignals(0, 0.0, (ReplicaLoad(2, 8, 1.0, gpu_utilization=0.97), ReplicaLoad(0, 8, 0.0)))
    assert set(run([hot] * 120, current=2)) == {2}


def test_gpu_utilization_absent_is_not_zero():
    # No GPU: None, so the guard neither blocks nor triggers anything.
    s = ModelSignals(0, 0.0, (ReplicaLoad(1, 8, 1.0, gpu_utilization=None), ReplicaLoad(0, 8, 0.0)))
    assert run([s] * 61, current=2)[-1] == 1


def test_bounds_hold():
    cfg = PolicyConfig(min_replicas=2, max_replicas=3, default_slots=8, target_utilization=1.0)
    assert run([load(0, 2)] * 400, current=2, cfg=cfg)[-1] == 2
    assert run([load(8, 1, waiting=500, oldest=60)], current=2, cfg=cfg) == [3]


def test_simulator_serves_every_request_from_zero():
    arrivals = poisson(2.0, 120, seed=1)
    r = simulate(arrivals, OssfleetPolicy(CFG), ReplicaModel(slots=8, cold_start_s=10), initial_replicas=0)
    assert r.requests == len(arrivals)  # nothing lost while replicas start
    assert r.gpu_seconds > 0 and r.max_replicas >= 1


def test_simulated_diurnal_load_uses_fewer_gpu_seconds_than_static_peak():
    model = ReplicaModel(slots=16, cold_start_s=30)
    arrivals = diurnal(1, 20, 1800, period_s=1800, seed=2)
    peak = static_peak_replicas(arrivals, model)
    cfg = PolicyConfig(max_replicas=4 * peak, target_wait_s=1, cold_start_s=30, target_utilization=0.8)
    ours = simulate(arrivals, OssfleetPolicy(cfg), model, initial_replicas=peak)
    static = simulate(arrivals, StaticPolicy(peak), model, initial_replicas=peak)
    ray = simulate(arrivals, RayServeDefaultPolicy(0, 4 * peak), model, initial_replicas=peak)
    assert ours.gpu_seconds < static.gpu_seconds and ours.gpu_seconds < ray.gpu_seconds
    assert ours.slo_attainment >= 0.95
