"""The engine's step scheduler with plain values: no torch, no checkpoint, no thread."""

from __future__ import annotations

import pytest

from ossfleet.engine.scheduler import Scheduler, SchedulerConfig, SeqParams, StepPlan

STOP = 99


def sched(**kw) -> Scheduler:
    cfg = {"max_slots": 8, "num_blocks": 64, "block_size": 4, "max_step_tokens": 64, "max_prefill_chunk": 64}
    return Scheduler(SchedulerConfig(**(cfg | kw)))


def params(max_tokens: int = 100, **kw) -> SeqParams:
    return SeqParams(max_tokens=max_tokens, stop_token_ids=frozenset({STOP}), **kw)


def run(s: Scheduler, plan: StepPlan, token: int = 7) -> list:
    return s.update(plan, {c.request_id: token for c in plan.chunks if c.sample})


def step(s: Scheduler, token: int = 7) -> tuple[StepPlan, list]:
    plan = s.schedule()
    assert plan is not None
    return plan, run(s, plan, token)


def test_a_new_request_joins_the_running_batch_at_the_next_step():
    s = sched()
    s.add("a", [1, 2, 3], params())
    s.add("b", [4, 5], params())
    plan, _ = step(s)
    assert {c.request_id: len(c.token_ids) for c in plan.chunks} == {"a": 3, "b": 2}
    s.add("c", [6, 7, 8, 9], params())
    plan, out = step(s)
    assert {c.request_id: (len(c.token_ids), c.sample) for c in plan.chunks} == {
        "a": (1, True),
        "b": (1, True),
        "c": (4, True),
    }
    assert [o.request_id for o in out] == ["a", "b", "c"] and not any(o.finished for o in out)


def test_a_long_prompt_is_prefilled_in_chunks_and_samples_only_at_its_end():
    s = sched(max_prefill_chunk=16)
    s.add("long", list(range(40)), params())
    starts = []
    for _ in range(3):
        plan, _out = step(s)
        (c,) = plan.chunks
        starts.append((c.start, len(c.token_ids), c.sample))
    assert starts == [(0, 16, False), (16, 16, False), (32, 8, True)]
    assert s.seqs["long"].output == [7]


def test_decodes_come_first_and_prefill_takes_what_is_left_of_the_budget():
    s = sched(max_step_tokens=10)
    for r in "abc":
        s.add(r, [1, 2], params())
    step(s)  # 6 prompt tokens
    s.add("new", list(range(20)), params())
    plan, _ = step(s)
    sizes = {c.request_id: len(c.token_ids) for c in plan.chunks}
    assert sizes == {"a": 1, "b": 1, "c": 1, "new": 7}


def test_finish_rules_stop_length_min_tokens_and_ignore_eos():
    s = sched()
    s.add("stop", [1], params())
    s.add("len", [1], params(max_tokens=2))
    s.add("min", [1], params(min_tokens=2))
    s.add("eos", [1], params(max_tokens=3, ignore_eos=True))

    def go(tokens: dict[str, int]) -> tuple[dict, dict]:
        plan = s.schedule()
        banned = {c.request_id: c.banned_ids for c in plan.chunks}
        return banned, {o.request_id: o for o in s.update(plan, tokens)}

    banned, out = go({"stop": STOP, "len": 5, "min": 5, "eos": STOP})
    assert banned["min"] == (STOP,) and banned["stop"] == ()
    assert out["stop"].finished and out["stop"].finish_reason == "stop" and out["stop"].token_ids == (STOP,)
    assert not out["eos"].finished  # a stop token does not end it
    assert not out["len"].finished
    banned, out = go({"len": 5, "min": 5, "eos": 5})
    assert banned["min"] == (STOP,)  # 1 output < min_tokens 2
    assert out["len"].finish_reason == "length"
    banned, out = go({"min": STOP, "eos": STOP})
    assert banned["min"] == ()
    assert out["min"].finish_reason == "stop" and out["eos"].finish_reason == "length"
    assert s.seqs == {} and s.used_blocks == 0


def test_abort_waiting_running_and_in_flight_frees_every_block():
    s = sched(max_slots=2)
    s.add("a", [1, 2, 3], params())
    s.add("b", [1, 2, 3], params())
    s.add("w", [1], params())  # waits: two slots
    step(s)
    assert [x.request_id for x in s.waiting] == ["w"]
    assert [(o.request_id, o.finish_reason) for o in s.abort("w")] == [("w", "abort")]
    assert [(o.request_id, o.finish_reason) for o in s.abort("a")] == [("a", "abort")]
    plan = s.schedule()
    assert [c.request_id for c in plan.chunks] == ["b"]
    assert s.abort("b") == []  # in flight: it ends when its step returns
    out = run(s, plan)
    assert [(o.request_id, o.finished, o.finish_reason, o.token_ids) for o in out] == [("b", True, "abort", ())]
    assert s.used_blocks == 0 and not s.seqs


def test_a_kv_full_engine_of_batch_rows_starts_an_interactive_request_within_two_steps():
    # 8 blocks of 4 tokens: four batch-band rows (band 2) hold them all.
    s = sched(num_blocks=8)
    for i in range(4):
        s.add(f"b{i}", [1, 2, 3, 4, 5, 6, 7], params(priority=2, max_tokens=20))
    step(s)
    assert s.used_blocks == 8
    s.add("chat", [1, 2, 3], params(priority=0, max_tokens=20))
    firsts, preempted = [], []
    for _ in range(2):
        plan, out = step(s)
        firsts += [o for o in out if o.request_id == "chat"]
        preempted += plan.preempted
    assert firsts, "the interactive request produced a token within two steps"
    # The first victim was the most recently started batch row; it kept its output and waits to resume.
    assert preempted[0] == "b3" and s.seqs["b3"] in s.waiting
    assert len(s.seqs["b3"].output) >= 1 and s.seqs["b3"].computed == 0


def test_a_preempted_request_resumes_by_recomputing_prompt_and_output_and_emits_nothing_twice():
    s = sched(num_blocks=4)  # 16 tokens
    s.add("low", [1, 2, 3, 4, 5, 6], params(priority=2, max_tokens=4))
    step(s, token=40)
    step(s, token=41)
    assert s.seqs["low"].output == [40, 41]
    s.add("hi", list(range(10, 22)), params(priority=0, max_tokens=1))  # needs 3 blocks + 1: all of them
    plan, out = step(s, token=50)
    assert [c.request_id for c in plan.chunks] == ["hi"] and plan.preempted == ("low",)
    assert [(o.request_id, o.finish_reason) for o in out] == [("hi", "length")]
    plan, out = step(s, token=42)
    (c,) = plan.chunks
    assert c.request_id == "low" and c.start == 0 and c.token_ids == (1, 2, 3, 4, 5, 6, 40, 41) and c.sample
    assert [o.token_ids for o in out] == [(42,)]  # only the new token
    plan, out = step(s, token=43)
    assert out[0].finished and s.seqs == {} and s.used_blocks == 0


def test_a_request_that_can_never_fit_the_cache_is_refused():
    s = sched(num_blocks=2)
    with pytest.raises(ValueError, match="exceed the KV cache"):
        s.add("big", [1] * 6, params(max_tokens=4))
    assert not s.seqs


def test_with_two_plans_in_flight_requests_split_and_none_runs_twice_at_once():
    s = sched(max_slots=4, in_flight=2)
    for r in "abcd":
        s.add(r, [1, 2], params())
    p1 = s.schedule()
    p2 = s.schedule()
    assert p1 is not None and p2 is not None
    ids1 = {c.request_id for c in p1.chunks}
    ids2 = {c.request_id for c in p2.chunks}
    assert len(ids1) == 2 and len(ids2) == 2 and not ids1 & ids2
    assert s.schedule() is None  # everything is in flight
    run(s, p1)
    p3 = s.schedule()
    assert {c.request_id for c in p3.chunks} == ids1


def test_higher_bands_start_first_and_equal_bands_in_arrival_order():
    s = sched(max_slots=2)
    s.add("batch", [1], params(priority=2))
    s.add("std", [1], params(priority=1))
    s.add("chat", [1], params(priority=0))
    plan = s.schedule()
    assert [c.request_id for c in plan.chunks] == ["chat", "std"]
