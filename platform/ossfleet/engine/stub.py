"""An engine that needs no model: it answers at once with a fixed harmony reply.

It measures and tests the platform alone (gateway, Redis, streams, leases)
with the engine's cost taken out, as ``bench/serving.py`` and the load tests do.
The reply is ``<|channel|>final<|message|>`` then ``reply_tokens`` text tokens
taken cyclically from the prompt, then ``<|return|>``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ossfleet.engine.base import EngineError, EngineRequest, EngineStats, TokenOutput


class StubEngine:
    def __init__(
        self,
        header_ids: list[int],
        return_id: int,
        *,
        max_slots: int = 256,
        max_context: int = 131_072,
        reply_tokens: int = 16,
        token_delay_s: float = 0.0,
        chunk: int = 16,
    ) -> None:
        self.header_ids = header_ids
        self.return_id = return_id
        self.max_slots = max_slots
        self.max_context = max_context
        self.reply_tokens = reply_tokens
        self.token_delay_s = token_delay_s
        self.chunk = chunk
        self._running: set[str] = set()
        self._aborted: set[str] = set()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def healthy(self) -> bool:
        return True

    def free_slots(self) -> int:
        return self.max_slots - len(self._running)

    def stats(self) -> EngineStats:
        return EngineStats(len(self._running), 0, self.max_slots, None, 0.0)

    def abort(self, request_id: str) -> None:
        if request_id in self._running:
            self._aborted.add(request_id)

    async def generate(self, request: EngineRequest) -> AsyncIterator[TokenOutput]:
        if len(request.prompt_ids) + request.sampling.max_tokens > self.max_context:
            raise EngineError(f"prompt + max_tokens exceed the context ({self.max_context})")
        rid = request.request_id
        self._running.add(rid)
        try:
            body = [request.prompt_ids[i % len(request.prompt_ids)] for i in range(self.reply_tokens)]
            n = min(request.sampling.max_tokens, len(self.header_ids) + len(body) + 1)
            tokens = [*self.header_ids, *body, self.return_id][:n]
            finish = "stop" if tokens and tokens[-1] == self.return_id else "length"
            for i in range(0, len(tokens), self.chunk):
                if rid in self._aborted:
                    yield TokenOutput([], True, "abort")
                    return
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s * self.chunk)
                last = i + self.chunk >= len(tokens)
                yield TokenOutput(tokens[i : i + self.chunk], last, finish if last else None)
        finally:
            self._running.discard(rid)
            self._aborted.discard(rid)
