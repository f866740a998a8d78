"""The work item: what the gateway enqueues for one request and the replica runs, as it crosses Redis.

One encoding (compact JSON with a version), one decoding. A reader ignores fields it does not know (a newer
gateway may add optional ones) and refuses a version above its own with :class:`UnsupportedWorkItem`; the
replica then hands the request back as retryable, for a replica that reads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ossfleet.protocol.chat import ChatRequest

WORK_ITEM_VERSION = 1


class UnsupportedWorkItem(ValueError):
    """A work item this code cannot read (a newer version, or not a work item at all)."""


@dataclass(frozen=True)
class AdapterRef:
    """The LoRA adapter a request runs with: its cache key (``AdapterRecord.key``) and its files' folder."""

    key: str
    path: str


@dataclass(frozen=True)
class WorkItem:
    """One request as the engine runs it: the prompt's token ids (rendered at the gateway) and how to sample."""

    prompt: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    min_tokens: int = 0
    ignore_eos: bool = False
    raw: bool = False  # a raw completion: plain text out, no harmony
    tools: tuple[str, ...] = ()  # the tools offered (names): a family that calls tools in text parses them
    grammar: str | None = None  # structured output: the Lark grammar the output must match
    logprobs: int | None = None  # None: none; k: the answer tokens' and their k most likely alternatives
    discount: float = 0.0  # the batch discount the request is charged at
    adapter: AdapterRef | None = None
    version: int = WORK_ITEM_VERSION

    @classmethod
    def of(
        cls,
        choice: ChatRequest,
        prompt: list[int],
        max_tokens: int,
        *,
        grammar: str | None = None,
        discount: float = 0.0,
        adapter: AdapterRef | None = None,
    ) -> WorkItem:
        """The work item of one choice of a request (``ChatRequest.choices()``), its prompt rendered."""
        return cls(
            prompt=prompt, max_tokens=max_tokens, temperature=choice.temperature, top_p=choice.top_p,
            top_k=choice.top_k, seed=choice.seed, stop=tuple(choice.stop),
            min_tokens=min(choice.min_tokens, max_tokens), ignore_eos=choice.ignore_eos,
            raw=choice.prompt is not None, tools=tuple(t.name for t in choice.tools), grammar=grammar,
            logprobs=choice.logprobs,
            discount=discount, adapter=adapter,
        )  # fmt: skip

    def encode(self) -> str:
        """Compact JSON; fields at their default are left out (a prompt's ids are most of the bytes)."""
        out: dict[str, Any] = {"v": self.version, "prompt": self.prompt, "max_tokens": self.max_tokens}
        for f in fields(self):
            if f.name in ("prompt", "max_tokens", "version"):
                continue
            value = getattr(self, f.name)
            if value != f.default:
                out[f.name] = asdict(value) if isinstance(value, AdapterRef) else value
        return json.dumps(out, separators=(",", ":"))

    @classmethod
    def decode(cls, data: str | bytes) -> WorkItem:
        try:
            raw = json.loads(data)
            version = int(raw.get("v", 0))
        except (ValueError, TypeError, AttributeError) as e:
            raise UnsupportedWorkItem(f"not a work item: {type(e).__name__}") from None
        if not 1 <= version <= WORK_ITEM_VERSION:
            raise UnsupportedWorkItem(f"work item version {version}; this replica reads 1 to {WORK_ITEM_VERSION}")
        known = {f.name for f in fields(cls)} - {"version"}
        kw = {k: v for k, v in raw.items() if k in known}
        for name in ("stop", "tools"):
            if name in kw:
                kw[name] = tuple(kw[name])
        if kw.get("adapter") is not None:
            kw["adapter"] = AdapterRef(**kw["adapter"])
        try:
            return cls(**kw, version=version)
        except TypeError as e:  # a required field missing
            raise UnsupportedWorkItem(str(e)) from None
