from dataclasses import replace

import pytest

from ossfleet.config import PriceConfig
from ossfleet.control.router import ModelLoad, ModelOption, RouteRequest, TenantPolicy, place
from ossfleet.errors import BudgetExhausted, ContextTooLong, InvalidRequest, ModelNotFound, PermissionDenied

SMALL = ModelOption("gpt-oss-20b", 20.9e9, PriceConfig(input_per_1k=0.001, output_per_1k=0.001), 8192)
LARGE = ModelOption("gpt-oss-120b", 116.8e9, PriceConfig(input_per_1k=0.01, output_per_1k=0.01), 8192)
MODELS = [SMALL, LARGE]
BANDS = ("interactive", "standard", "batch")


def tenant(**kw):
    base = dict(name="acme", allowed_models=("*",), bands=BANDS, max_band=0, default_band=1, budget_left_nusd=None)
    return TenantPolicy(**{**base, **kw})


def test_explicit_model_and_default_band():
    p = place(RouteRequest("gpt-oss-20b", 100, 100), tenant(), MODELS)
    assert (p.model, p.band, p.reasoning_effort) == ("gpt-oss-20b", 1, "medium")
    assert p.reserve_nusd == 200 * 1000  # 200 tokens at $0.001/1k = $0.0002
    assert not p.fell_back


def test_auto_prefers_the_larger_model_when_the_budget_allows():
    assert place(RouteRequest("auto", 100, 100), tenant(), MODELS).model == "gpt-oss-120b"


def test_auto_falls_to_the_smaller_model_when_the_budget_is_short():
    p = place(RouteRequest("auto", 100, 100), tenant(budget_left_nusd=500_000), MODELS)
    assert p.model == "gpt-oss-20b"


def test_explicit_model_is_never_silently_changed():
    with pytest.raises(BudgetExhausted):
        place(RouteRequest("gpt-oss-120b", 100, 100), tenant(budget_left_nusd=500_000), MODELS)


def test_explicit_model_falls_back_when_the_tenant_allows():
    p = place(RouteRequest("gpt-oss-120b", 100, 100), tenant(budget_left_nusd=500_000, allow_fallback=True), MODELS)
    assert p.model == "gpt-oss-20b" and p.fell_back


def test_unknown_and_disallowed_models():
    with pytest.raises(ModelNotFound, match="available"):
        place(RouteRequest("gpt-5", 1, 1), tenant(), MODELS)
    with pytest.raises(ModelNotFound, match="not available to tenant"):
        place(RouteRequest("gpt-oss-120b", 1, 1), tenant(allowed_models=("gpt-oss-20b",)), MODELS)


def test_priority_above_the_tenants_band_is_refused():
    with pytest.raises(PermissionDenied, match="may use priorities"):
        place(RouteRequest("gpt-oss-20b", 1, 1, priority="interactive"), tenant(max_band=1), MODELS)
    assert place(RouteRequest("gpt-oss-20b", 1, 1, priority="batch"), tenant(max_band=1), MODELS).band == 2
    with pytest.raises(InvalidRequest, match="unknown priority"):
        place(RouteRequest("gpt-oss-20b", 1, 1, priority="vip"), tenant(), MODELS)


def test_context_overflow_is_refused_before_any_compute():
    with pytest.raises(ContextTooLong, match="8192"):
        place(RouteRequest("gpt-oss-20b", 8000, 500), tenant(), MODELS)


def test_auto_lowers_reasoning_effort_to_fit_the_budget():
    # 100 in + 8000 out on the small model costs $0.0081; low effort caps output at 1024 tokens ($0.001124).
    req = RouteRequest("auto", 100, 8000, reasoning_effort="high")
    p = place(req, tenant(budget_left_nusd=2_000_000, allowed_models=("gpt-oss-20b",)), MODELS)
    assert (p.model, p.reasoning_effort, p.max_tokens) == ("gpt-oss-20b", "low", 1024)
    assert p.effort_lowered and p.reserve_nusd == 1_124_000


def test_explicit_model_keeps_its_effort_and_max_tokens():
    req = RouteRequest("gpt-oss-20b", 100, 8000, reasoning_effort="high")
    with pytest.raises(BudgetExhausted, match="may cost up to"):
        place(req, tenant(budget_left_nusd=2_000_000), MODELS)
    p = place(req, tenant(), MODELS)
    assert (p.reasoning_effort, p.max_tokens) == ("high", 8000)


def test_auto_avoids_a_model_whose_wait_is_too_long():
    busy = ModelLoad(waiting=600, replicas=1, requests_per_s=2.0)  # 300 s of backlog
    idle = ModelLoad(waiting=0, replicas=1, requests_per_s=2.0)
    models = [replace(SMALL, load=idle), replace(LARGE, load=busy)]
    assert place(RouteRequest("auto", 10, 10), tenant(max_wait_s=30), models).model == "gpt-oss-20b"
    # When both wait too long, the shorter wait wins.
    models = [replace(SMALL, load=replace(busy, waiting=100)), replace(LARGE, load=busy)]
    assert place(RouteRequest("auto", 10, 10), tenant(max_wait_s=30), models).model == "gpt-oss-20b"
    # An explicit choice ignores load.
    assert place(RouteRequest("gpt-oss-120b", 10, 10), tenant(), models).model == "gpt-oss-120b"


def test_expected_wait():
    assert ModelLoad(0, 2, 1.0).expected_wait_s() == 0
    assert ModelLoad(10, 2, 1.0).expected_wait_s() == 5
    assert ModelLoad(5, 0, 1.0, cold_start_s=60).expected_wait_s() == 65


def test_a_discounted_request_reserves_and_fits_the_budget_at_its_discounted_price():
    from ossfleet.control.pricing import cost_nusd

    m = ModelOption("small", 20, PriceConfig(input_per_1k=1.0, output_per_1k=1.0), 4096)
    full = cost_nusd(m.price, 100, 100)
    t = tenant(budget_left_nusd=full // 2 + 1)
    with pytest.raises(BudgetExhausted):
        place(RouteRequest("small", 100, 100), t, [m])
    p = place(RouteRequest("small", 100, 100, discount=0.5), t, [m])
    assert p.reserve_nusd == cost_nusd(m.price, 100, 100, 0.5) == full // 2
