"""The autoscaling policy over scripted signal sequences (pure: the clock is passed in)."""

from __future__ import annotations

from dataclasses import replace

from autoscaling.policy import ModelSignals, PolicyConfig, PolicyState, capacity_rps, decide, demand
from autoscaling.simulator import (
    OraclePolicy,
    OssfleetPolicy,
    QueueLengthPolicy,
    RayServeDefaultPolicy,
    ReplicaModel,
    StaticPolicy,
    diurnal,
    poisson,
    simulate,
    spiky,
    static_peak_replicas,
)
from ossfleet.protocol.load import ReplicaLoad

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


def test_online_growth_scales_up_at_once_and_batch_growth_waits_the_up_delay():
    assert run([load(14, 1, waiting=2, oldest=0.5)], current=1) == [2]
    cfg = replace(CFG, batch_max_replicas=2)
    batch = ModelSignals(10, 0.0, (ReplicaLoad(8, 8, 1.0, running_batch=8),), waiting_batch=10)
    counts = run([batch] * 8, current=1, cfg=cfg)
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


def served(running: int, replicas: int, rate: float, service_s: float = 4.0) -> ModelSignals:
    """``replicas`` of 8 slots whose completed requests took ``service_s`` (capacity 2 req/s each),
    online arrivals at ``rate`` per second."""
    per = [running // replicas + (1 if i < running % replicas else 0) for i in range(replicas)]
    loads = tuple(ReplicaLoad(n, 8, n / service_s, completions=50, service_s=service_s) for n in per)
    return ModelSignals(0, 0.0, loads, arrivals_per_s=rate)


def test_capacity_comes_from_service_time_not_from_a_step_in_running():
    # 8 slots, 4 s a request: 2 req/s, however many just started.
    assert capacity_rps(ReplicaLoad(8, 8, 0.5, completions=50, service_s=4.0)) == 2.0
    # Too few completions to trust: unknown, not a low rate.
    assert capacity_rps(ReplicaLoad(8, 8, 0.5, completions=3, service_s=4.0)) is None


def test_a_burst_is_held_for_its_hold_time_then_released():
    cfg = replace(CFG, burst_hold_s=600, downscale_delay_s=30, cold_start_s=30)
    quiet, burst = served(8, 2, 2.0), served(16, 2, 16.0)
    seq = [quiet] * 40 + [burst] * 20 + [quiet] * 1200
    counts = run(seq, current=2, cfg=cfg)
    # 16 req/s at 2 req/s a replica, foreseen: 8 at full slots (9 while the trend still climbs).
    assert 8 <= max(counts[40:60]) <= 9
    assert min(counts[60:600]) == 8, "capacity for the burst is held after it passes"
    assert counts[-1] < 8, "and released once the hold time is over"


def test_a_gradual_rise_is_followed_and_not_held():
    cfg = replace(CFG, downscale_delay_s=30, cold_start_s=30)
    ramp = [served(8, 2, 2.0 + i / 100) for i in range(600)]  # 2 -> 8 req/s over 10 minutes
    down = [served(8, 2, 2.0)] * 600
    counts = run(ramp + down, current=2, cfg=cfg)
    assert max(counts[:600]) >= 4
    assert counts[-1] <= 2, "a trend the policy could follow is not held as a burst"


def test_batch_lines_alone_ask_for_at_most_batch_max_replicas():
    s = ModelSignals(500, 0.0, (), waiting_batch=500)
    assert demand(s, CFG) == 1
    assert demand(s, replace(CFG, batch_max_replicas=3)) == 3
    assert demand(s, replace(CFG, batch_max_replicas=0)) == 0
    # Online work beside it asks for what it needs.
    assert demand(ModelSignals(516, 0.0, (), waiting_batch=500), CFG) == 2


def test_oracle_meets_the_slo_with_fewer_gpu_seconds_than_static_and_queue_length_sees_only_the_queue():
    model = ReplicaModel(slots=16, cold_start_s=20)
    arrivals = spiky(1.0, 900, seed=4, mean_gap_s=200)
    peak = static_peak_replicas(arrivals, model)
    oracle = simulate(arrivals, OraclePolicy(arrivals, model), model, initial_replicas=peak)
    static = simulate(arrivals, StaticPolicy(peak), model, initial_replicas=peak)
    assert oracle.slo_attainment >= 0.99 and oracle.gpu_seconds < static.gpu_seconds
    # Nothing waits, so the queue-length scaler asks for one replica (KEDA's cooldown aside).
    q = QueueLengthPolicy(max_replicas=10)
    assert q(ModelSignals(0, 0.0, (ReplicaLoad(16, 16, 1.0),) * 3), 3, 0.0) == 0


def test_serve_adapter_reads_the_arrival_rate_from_the_counters_increments_and_keeps_its_state_as_json():
    import json
    from dataclasses import asdict

    from autoscaling.serve_policy import arrival_rate, policy_state

    rate, samples = arrival_rate([], 100.0, 500)
    assert rate is None  # one sample: no rate yet
    rate, samples = arrival_rate(samples, 102.0, 520)
    assert rate == 10.0
    rate, samples = arrival_rate(samples, 111.0, 610)  # the first sample fell out of the 10 s window
    assert rate == 10.0 and samples[0][0] == 102.0
    # A counter that went backwards (Redis flushed) starts again rather than reading a negative rate.
    rate, samples = arrival_rate(samples, 116.0, 3)
    assert rate is None and samples == [[116.0, 3.0]]
    state = PolicyState(rates=((1.0, 2.0),), bursts=((1.0, 9.0),), burst_start=1.0, down_max=3)
    assert policy_state(json.loads(json.dumps(asdict(state)))) == state


def test_adapter_load_asks_for_a_replica_per_lru_of_distinct_waiting_adapters():
    # Ten waiting requests fit one replica's slots, but they use nine different adapters and a replica
    # holds four at once: three replicas, so no adapter waits for another's requests to finish.
    s = ModelSignals(10, 0.0, (ReplicaLoad(0, 16, 0.0),), adapters_waiting=9)
    assert demand(s, replace(CFG, default_slots=16)) == 1  # a model without adapters ignores the count
    assert demand(s, replace(CFG, default_slots=16, adapters_per_replica=4)) == 3
    assert demand(replace(s, adapters_waiting=4), replace(CFG, default_slots=16, adapters_per_replica=4)) == 1
    assert run([s] * 2, current=1, cfg=replace(CFG, default_slots=16, adapters_per_replica=4)) == [3, 3]
