"""The autoscaling policy over scripted signal sequences (pure: the clock is passed in)."""

from __future__ import annotations

from dataclasses import replace

from autoscaling.policy import ModelSignals, PolicyConfig, PolicyState, capacity_rps, decide, demand, held_peak
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


def test_a_surge_that_outlasts_a_cold_start_scales_up_within_one_decision():
    # 4 req/s against one replica's 2 (8 slots, 4 s a request), 20 waiting: in a cold start (30 s) 80 would
    # wait, so replicas come at once: enough for 4 req/s and to clear those 80 within a cold start.
    s = replace(served(8, 1, 4.0), waiting=20, oldest_wait_s=1.0)
    counts = run([s], current=1)
    assert counts[0] == demand(s, CFG) == 4


def test_online_growth_scales_up_at_once_and_batch_growth_waits_the_up_delay():
    assert run([load(14, 1, waiting=2, oldest=0.5)], current=1) == [2]  # 14 running on 8 slots
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


def test_a_backlog_that_drains_before_a_cold_start_adds_no_replica():
    # One replica completes 2 req/s, 1 req/s arrives, 20 wait: they drain in 20 s, before a new replica
    # (30 s) could serve. Nothing is added, though every one of them waits longer than the SLO.
    s = replace(served(8, 1, 1.0), waiting=20, oldest_wait_s=5.0)
    assert run([s] * 5, current=1) == [1] * 5


def burst_run(state: PolicyState, seconds: int, quiet_s: int = 40):
    """``quiet_s`` at 1 req/s, then ``seconds`` of a burst at 6 req/s against one replica that completes 2,
    its backlog growing 4 a second; the counts the burst's decisions ask for, and the state after."""
    quiet, burst = served(8, 1, 1.0), served(8, 1, 6.0)
    now = 0.0
    for _ in range(quiet_s):
        _, state = decide(quiet, 1, state, CFG, now)
        now += 1.0
    counts = []
    for second in range(seconds):
        count, state = decide(replace(burst, waiting=4 * second), 1, state, CFG, now)
        counts.append(count)
        now += 1.0
    return counts, state


def test_a_burst_as_short_as_the_last_ones_adds_none_and_a_longer_one_scales():
    # Past bursts lasted 10-15 s, less than a cold start (30 s). A new one is expected to end within the cold
    # start: the backlog it leaves, one replica clears. Once it outlasts them it may be a new level.
    counts, _ = burst_run(PolicyState(episodes=(10.0, 12.0, 15.0)), 20)
    assert counts[:12] == [1] * 12, "within the bursts' usual length: no replica"
    assert max(counts[12:]) >= 3, "once it outlasts them: scaled for it"


def test_a_first_burst_holds_nothing_and_a_recurring_one_holds_its_peak():
    counts, state = burst_run(PolicyState(episodes=(10.0, 12.0, 15.0)), 5)
    assert counts == [1] * 5 and held_peak(state) == 0.0  # a first burst
    counts, state = burst_run(PolicyState(episodes=(10.0, 12.0, 15.0), last_burst_at=-600.0), 5)
    assert held_peak(state) == 6.0 and counts == [3] * 5  # recurring: its peak at full slots (2 req/s each)


def test_capacity_is_released_soon_after_the_prediction_says_it_is_idle():
    cfg = replace(CFG, downscale_delay_s=30, cold_start_s=30)
    busy, quiet = served(16, 8, 12.0), served(2, 8, 1.0)
    counts = run([busy] * 30 + [quiet] * 300, current=8, cfg=cfg)
    assert counts[29] >= 6
    assert counts[-1] <= 2, "down to what the quiet rate needs within minutes, not an hour"
    assert min(counts[30:60]) >= 6, "not before the down delay"


def test_a_gradual_rise_is_followed():
    cfg = replace(CFG, downscale_delay_s=30, cold_start_s=30)
    ramp = [served(8, 2, 2.0 + i / 100) for i in range(600)]  # 2 -> 8 req/s over 10 minutes
    down = [served(8, 2, 2.0)] * 600
    counts = run(ramp + down, current=2, cfg=cfg)
    assert max(counts[:600]) >= 4
    assert counts[-1] <= 2


def test_a_warm_pool_keeps_spare_replicas_while_there_is_work():
    s = served(8, 2, 2.0)
    assert demand(s, CFG) + 2 == demand(s, replace(CFG, warm_pool=2))
    assert demand(ModelSignals(0, 0.0, ()), replace(CFG, warm_pool=2)) == 0  # idle: none


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
    state = PolicyState(rates=((1.0, 2.0),), bursts=((1.0, 9.0),), episode_start=1.0, episode_base=2.0,
                        episodes=(10.0,), down_max=3)  # fmt: skip
    assert policy_state(json.loads(json.dumps(asdict(state)))) == state
    assert policy_state({**asdict(state), "burst_start": 1.0}) == state  # an older policy's state


def test_adapter_load_asks_for_a_replica_per_lru_of_distinct_waiting_adapters():
    # Ten waiting requests fit one replica's slots, but they use nine different adapters and a replica
    # holds four at once: three replicas, so no adapter waits for another's requests to finish.
    s = ModelSignals(10, 0.0, (ReplicaLoad(0, 16, 0.0),), adapters_waiting=9)
    assert demand(s, replace(CFG, default_slots=16)) == 1  # a model without adapters ignores the count
    assert demand(s, replace(CFG, default_slots=16, adapters_per_replica=4)) == 3
    assert demand(replace(s, adapters_waiting=4), replace(CFG, default_slots=16, adapters_per_replica=4)) == 1
    assert run([s] * 2, current=1, cfg=replace(CFG, default_slots=16, adapters_per_replica=4)) == [3, 3]
