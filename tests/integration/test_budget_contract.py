"""The budget arithmetic has one Python home (control/budget) and one Lua copy (reserve_check in common.lua,
atomic with the reservation). Both read the same Redis state here; the admit script's refusal must report
what ``budget.left_nusd`` computes, in every state: untouched, partly reserved, partly spent, overdrawn."""

from __future__ import annotations

import pytest

from ossfleet.control import budget
from ossfleet.control.pricing import NANO_PER_USD
from ossfleet.control.queue import Admission
from ossfleet.errors import BudgetExhausted
from ossfleet.protocol.work import WorkItem

LIMIT = 10_000


def adm(rid: str, reserve: int) -> Admission:
    return Admission(rid, "a", "m", 1, WorkItem([1], 8), 3, 8, reserve, LIMIT, "2026-11", 10**6, 10**9)


async def python_left(q) -> int:
    reserved, spent = await q.r.hmget(q.keys.budget("a", "2026-11"), "reserved", "spent")
    return budget.left_nusd(LIMIT, int(spent or 0), int(reserved or 0))


async def lua_left(q) -> float:
    with pytest.raises(BudgetExhausted) as e:
        await q.admit(adm("too-much", LIMIT + 1))
    return e.value.details["budget_left_usd"]


async def test_the_admit_script_and_the_budget_module_agree_on_what_is_left(env):
    q, _ = env
    seen = []
    assert round(await lua_left(q) * NANO_PER_USD) == await python_left(q) == LIMIT  # untouched
    await q.admit(adm("r1", 3000))  # reserved 3000
    seen.append((round(await lua_left(q) * NANO_PER_USD), await python_left(q)))
    lease = await q.pull("m", "w")
    await q.complete("m", lease.request_id, "w", output_tokens=1, cost_nusd=2500, finish_reason="stop")  # spent
    seen.append((round(await lua_left(q) * NANO_PER_USD), await python_left(q)))
    await q.r.hincrby(q.keys.budget("a", "2026-11"), "spent", 9000)  # a settlement above its reservation
    seen.append((round(await lua_left(q) * NANO_PER_USD), max(0, await python_left(q))))
    assert seen == [(7000, 7000), (7500, 7500), (0, 0)]
    assert await python_left(q) == -1500  # Python keeps the sign; the refusal reports no less than zero
