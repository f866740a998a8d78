"""Stored responses (the Responses API's ``store``): each response object with the conversation it ends,
in Redis under the namespace's slot, readable by its tenant only, kept ``redis.response_ttl_s``."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ossfleet.errors import NotFound
from ossfleet.harmony import Message
from ossfleet.protocol.responses import message_dict

if TYPE_CHECKING:
    import redis.asyncio

    from ossfleet.control.keyspace import KeySpace


class ResponseStore:
    """Stored responses in Redis: the response object and the conversation it ends, readable by its tenant."""

    def __init__(self, client: redis.asyncio.Redis, keys: KeySpace, ttl_s: int) -> None:
        self.r = client
        self.keys = keys
        self.ttl_s = ttl_s

    def _key(self, rid: str) -> str:
        return self.keys.response(rid)

    async def put(self, tenant: str, rid: str, response: dict[str, Any], context: list[Message]) -> None:
        record = {"tenant": tenant, "response": response, "context": [message_dict(m) for m in context]}
        index, now = self.keys.responses(tenant), time.time()
        pipe = self.r.pipeline(transaction=False)
        pipe.set(self._key(rid), json.dumps(record, separators=(",", ":")), ex=self.ttl_s)
        pipe.zadd(index, {rid: now + self.ttl_s})
        pipe.zremrangebyscore(index, "-inf", now)  # the ids whose records have expired
        pipe.expire(index, self.ttl_s)
        await pipe.execute()

    async def get(self, tenant: str, response_id: str) -> dict[str, Any]:
        """The tenant's stored record; another tenant's (or none) is NotFound, alike."""
        rid = response_id.removeprefix("resp_")
        raw = await self.r.get(self._key(rid)) if response_id.startswith("resp_") else None
        record = json.loads(raw) if raw else None
        if record is None or record.get("tenant") != tenant:
            raise NotFound(f"no response {response_id!r} for this tenant", param="response_id")
        return dict(record)

    async def delete(self, tenant: str, response_id: str) -> None:
        await self.get(tenant, response_id)
        await self.r.delete(self._key(response_id.removeprefix("resp_")))
