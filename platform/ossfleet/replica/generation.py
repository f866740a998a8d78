"""One request's generation, shared by replicas and dedicated batch jobs: engine tokens in, stream events out.

:class:`Generation` turns the token outputs of one engine request into the
events a request's Redis stream carries: the output parsed in the model's chat
format (``ossfleet.chatformat``: harmony's reasoning, content and tool calls;
plain text, with Llama's JSON tool calls; plain text for a raw completion), cut at
the request's stop strings, with the log-probabilities of the answer's tokens
where the request asked for them (the stream's format: ``ossfleet.protocol.events``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ossfleet.chatformat import ChatFormat
from ossfleet.engine.base import (
    GRAMMAR_DEAD_END,
    Engine,
    EngineRefused,
    EngineRequest,
    SamplingParams,
    TokenConstraint,
    TokenLogprob,
    TokenOutput,
)
from ossfleet.harmony import Delta, Tokenizer
from ossfleet.protocol.events import Event, FinishReason
from ossfleet.protocol.work import WorkItem


class StopStrings:
    """Cuts the answer at the first stop string, which may span deltas.

    Text that could still be the start of a stop string is held back until
    it cannot (or the generation ends), so no part of a stop string ever
    reaches the client.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.sent = 0
        self.hit = False

    def feed(self, deltas: list[Delta], final: bool) -> list[Delta]:
        if not self.stops:
            return deltas
        out: list[Delta] = []
        for d in deltas:
            if d.kind != "content":
                out.append(d)
                continue
            self.text += d.text
            start = max(0, self.sent - self.hold)
            found = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
            if found:
                cut = min(found)
                if cut > self.sent:
                    out.append(Delta("content", self.text[self.sent : cut]))
                self.sent, self.hit = cut, True
                return out
        safe = len(self.text) if final else max(self.sent, len(self.text) - self.hold)
        if safe > self.sent:
            out.append(Delta("content", self.text[self.sent : safe]))
            self.sent = safe
        return out


def finish_reason(engine_reason: str | None, tool_call: bool) -> FinishReason:
    """The engine's reason (``stop`` | ``length`` | ``abort``) as the stream says it, mapped here only.

    ``tool_calls`` only where a call was parsed: a plain message the model ended with ``<|call|>`` is
    ``stop`` (a client that branches on the reason looks for calls that must be there). An aborted request
    was cancelled (its tenant's cancel, or its client gone)."""
    if tool_call:
        return FinishReason.TOOL_CALLS
    if engine_reason == "abort":
        return FinishReason.CANCELLED
    return FinishReason.LENGTH if engine_reason == "length" else FinishReason.STOP


def sampling_of(item: WorkItem) -> SamplingParams:
    """How the engine samples a work item."""
    return SamplingParams(
        max_tokens=item.max_tokens, temperature=item.temperature, top_p=item.top_p, top_k=item.top_k,
        seed=item.seed, stop=item.stop, min_tokens=item.min_tokens, ignore_eos=item.ignore_eos,
        logprobs=item.logprobs,
    )  # fmt: skip


class TokenBytes:
    """Each token id's bytes and text, as OpenAI's logprobs report them (cached per id)."""

    def __init__(self, tokenizer: Tokenizer, fmt: ChatFormat | None = None) -> None:
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        self.tok = tokenizer
        self._byte_of = {c: b for b, c in bytes_to_unicode().items()}
        self._special = (fmt or ChatFormat.of(tokenizer)).special
        self._cache: dict[int, bytes] = {}

    def bytes(self, token_id: int) -> bytes:
        b = self._cache.get(token_id)
        if b is None:
            piece = self.tok.convert_ids_to_tokens(token_id) if hasattr(self.tok, "convert_ids_to_tokens") else None
            if token_id not in self._special and isinstance(piece, str) and all(c in self._byte_of for c in piece):
                b = bytes(self._byte_of[c] for c in piece)  # a byte-level BPE token (gpt-oss's o200k)
            else:
                b = str(self.tok.decode([token_id], skip_special_tokens=False)).encode()
            self._cache[token_id] = b
        return b

    def entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        b = self.bytes(token_id)
        return {"token": b.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(b)}

    def entries(self, lp: TokenLogprob) -> dict[str, Any]:
        """OpenAI's chat form: the token, its log-probability and bytes, and its top alternatives."""
        return {**self.entry(lp.token_id, lp.logprob), "top_logprobs": [self.entry(t, v) for t, v in lp.top]}


class Generation:
    """One request on an engine: its token outputs as stream events, and how it ended."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        request_id: str,
        item: WorkItem,
        *,
        constraint: TokenConstraint | None = None,
        priority: int = 0,
        token_bytes: TokenBytes | None = None,
        adapter: str | None = None,
        cache_salt: str | None = None,
        fmt: ChatFormat | None = None,
    ) -> None:
        fmt = fmt or ChatFormat.of(tokenizer)  # harmony unless the model's format is given
        sampling = sampling_of(item)
        self.request = EngineRequest(
            request_id, item.prompt, sampling, fmt.stop, priority, constraint, adapter, item.grammar, cache_salt,
        )  # fmt: skip
        self.parser = fmt.parser(tokenizer, request_id, raw=item.raw, tools=item.tools)
        self.stops = StopStrings(sampling.stop)
        self.bytes = token_bytes if sampling.logprobs is not None else None
        if sampling.logprobs is not None and self.bytes is None:
            self.bytes = TokenBytes(tokenizer, fmt)
        self._pending: list[dict[str, Any]] = []
        self.output_tokens = 0
        self.finish = FinishReason.STOP
        self.final = False

    async def run(self, engine: Engine) -> AsyncIterator[list[Event]]:
        """The request's events, a list per engine output; :attr:`finish` and :attr:`output_tokens` after.

        Raises the engine's error (``RuntimeError``) if the engine failed under the request, and
        ``EngineError`` if the engine refused it.
        """
        rid = self.request.request_id
        ended_by: str | None = None
        async for out in engine.generate(self.request):
            if out.error == GRAMMAR_DEAD_END:  # the request's grammar, not the engine: no retry helps
                raise EngineRefused(out.error)
            if out.error:  # the engine failed under this request: another replica may serve it
                raise RuntimeError(out.error)
            events = self._feed(out)
            if out.finished:
                ended_by = out.finish_reason
            self.final = out.finished or self.stops.hit  # these events are the request's last
            if events:
                yield events
            if self.stops.hit:
                engine.abort(rid)
                ended_by = "stop"
                break
        self.finish = finish_reason(ended_by, self.parser.stopped_by == "call" and self.parser.calls > 0)

    def _feed(self, out: TokenOutput) -> list[Event]:
        self.output_tokens += len(out.token_ids)
        if self.bytes is None or not out.logprobs:
            deltas = self.parser.feed(out.token_ids)
        else:
            deltas = []
            for t, lp in zip(out.token_ids, out.logprobs, strict=True):
                deltas += self.parser.feed([t])
                if self.parser.answering(t):
                    self._pending.append(self.bytes.entries(lp))
        if out.finished:
            deltas += self.parser.finish()
        events = [Event(d) for d in self.stops.feed(deltas, final=out.finished)]
        if self._pending:
            content = [e for e in events if e.delta.kind == "content"]
            if content:
                content[-1].logprobs, self._pending = self._pending, []
            elif out.finished:
                events.append(Event(Delta("content", ""), self._pending))
                self._pending = []
        return events
