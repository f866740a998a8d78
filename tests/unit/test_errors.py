"""Typed errors survive pickling (Ray ships them between processes) with their status and details."""

from __future__ import annotations

import pickle

import pytest

from ossfleet import errors

CASES = [
    errors.InvalidRequest("bad", param="model"),
    errors.RequestTooLarge("too big"),
    errors.ContextTooLong("long", param="messages"),
    errors.AuthenticationFailed("no key"),
    errors.PermissionDenied("no", param="priority"),
    errors.ModelNotFound("which?", param="model"),
    errors.NotFound("gone"),
    errors.RateLimited("slow down", retry_after_s=2.5, limit="requests"),
    errors.BudgetExhausted("broke", budget_left_usd=0.5),
    errors.QueueFull("full"),
    errors.Unavailable("away"),
    errors.RequestFailed("failed"),
]


@pytest.mark.parametrize("e", CASES, ids=lambda e: type(e).__name__)
def test_every_error_pickles_with_its_status_and_details(e):
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is type(e)
    assert back.message == e.message and back.param == e.param and back.details == e.details
    assert back.to_openai() == e.to_openai() and back.headers() == e.headers()
