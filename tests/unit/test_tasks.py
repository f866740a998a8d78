"""A cancel that a task loses (as Python 3.11's wait_for can) still ends it."""

from __future__ import annotations

import asyncio

from ossfleet.tasks import cancel_and_wait


async def test_cancel_and_wait_ends_a_task_that_swallowed_the_first_cancel():
    events: list[str] = []

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.append("swallowed")  # what wait_for does when the cancel meets a completion
        await asyncio.Event().wait()  # goes on, as if never asked

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait({task}, timeout=0.05)
    assert not task.done() and events == ["swallowed"]  # a lone cancel was lost
    await cancel_and_wait(task)
    assert task.cancelled()
