"""The audit stream (``{ns}:audit``): who changed which key, budget or tenant, and when. Never a secret."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ossfleet.control.keyspace import keyspace

if TYPE_CHECKING:
    import redis
    import redis.asyncio


def _event(action: str, fields: dict[str, str]) -> dict[str, str]:
    return {"action": action, "at": datetime.now(UTC).isoformat(timespec="seconds"), **fields}


def audit(client: redis.Redis, namespace: str, action: str, **fields: str) -> None:
    """Append an audit event (key, budget and tenant changes) to ``{ns}:audit``."""
    client.xadd(keyspace(namespace).audit(), _event(action, fields), maxlen=100_000, approximate=True)  # type: ignore[arg-type]


async def audit_async(client: redis.asyncio.Redis, namespace: str, action: str, **fields: str) -> None:
    """:func:`audit`, on an asyncio client."""
    await client.xadd(keyspace(namespace).audit(), _event(action, fields), maxlen=100_000, approximate=True)  # type: ignore[arg-type]
