"""Ending asyncio tasks for certain.

Python 3.11's ``asyncio.wait_for`` drops a cancel that arrives in the same
loop iteration as the awaited operation completes (CPython gh-86296, fixed in
3.12), and redis-py writes every command through ``wait_for`` when a socket
timeout is set, as ossfleet's clients do. A single ``task.cancel()`` can
therefore be lost: the task goes on as if nothing was asked. Found by the
batch runner's kill test, which hung about once in a dozen runs on a loaded
machine.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any], every_s: float = 0.1) -> None:
    """Cancel ``task`` and return once it has ended, cancelling again while it has not."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every_s)
