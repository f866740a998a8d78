"""How a model's chats become prompt ids and its output becomes text: harmony, or the checkpoint's template.

gpt-oss speaks harmony (``ossfleet.harmony``). Every other family is
prompted with the chat template its checkpoint ships (``tokenizer_config.json``
or ``chat_template.jinja``), rendered by transformers' ``apply_chat_template``
as vLLM and the family's own tools render it, and answers in plain text that
ends at one of the ids its ``generation_config.json`` lists as
``eos_token_id``. Llama 3.x calls a tool by answering with one JSON object,
``{"name": ..., "parameters": {...}}`` (the format its template asks for);
:class:`TemplateTextStream` holds back an answer that may be such a call
until it ends, then returns it as a tool call or as the text it was.

:class:`ChatFormat` is what the gateway and the replicas hold per model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ossfleet.errors import InvalidRequest
from ossfleet.families import FAMILIES, FamilyTraits, family_of_model_type
from ossfleet.harmony import (
    Delta,
    HarmonyRenderer,
    HarmonyStreamParser,
    IncrementalDecoder,
    Message,
    ReasoningEffort,
    SpecialIds,
    Tokenizer,
    Tool,
    ToolCall,
)


def checkpoint_family(path: str | Path) -> FamilyTraits:
    """The family of the checkpoint at ``path`` (its ``config.json``'s ``model_type``)."""
    cfg = json.loads((Path(path) / "config.json").read_text())
    return family_of_model_type(str(cfg.get("model_type", "")))


def _generation_stops(path: Path) -> list[int]:
    gen = path / "generation_config.json"
    eos = json.loads(gen.read_text()).get("eos_token_id") if gen.exists() else None
    return [eos] if isinstance(eos, int) else list(eos or [])


@dataclass(frozen=True)
class ChatFormat:
    """A model's chat format: its family, the ids that end an answer, the ids that are never text."""

    family: FamilyTraits
    stop: tuple[int, ...]
    special: frozenset[int]

    @classmethod
    def of(cls, tokenizer: Tokenizer, path: str | Path | None = None, family: str | None = None) -> ChatFormat:
        """The format of a checkpoint (``path``), or of a family's ``tokenizer`` alone (harmony by default)."""
        traits = checkpoint_family(path) if path is not None else FAMILIES[family or "gpt-oss"]
        if traits.harmony:
            ids = SpecialIds.of(tokenizer)
            return cls(traits, ids.stop, ids.all_special(tokenizer))
        stops = _generation_stops(Path(path)) if path is not None else []
        eos = getattr(tokenizer, "eos_token_id", None)
        if not stops and eos is not None:
            stops = [eos]
        extra = getattr(tokenizer, "all_special_ids", None) or []
        return cls(traits, tuple(stops), frozenset([*extra, *stops]))

    def renderer(self, tokenizer: Tokenizer, model: str) -> HarmonyRenderer | TemplateRenderer:
        return HarmonyRenderer(tokenizer) if self.family.harmony else TemplateRenderer(tokenizer, self.family, model)

    def parser(
        self, tokenizer: Tokenizer, request_id: str, *, raw: bool, tools: Sequence[str] = ()
    ) -> HarmonyStreamParser | TemplateTextStream:
        """The parser of one request's output: harmony, or plain text (a raw completion: never a tool call)."""
        if self.family.harmony and not raw:
            return HarmonyStreamParser(tokenizer, request_id)
        calls = self.family.tool_format == "llama_json" and not raw
        return TemplateTextStream(tokenizer, self.special, request_id, tools if calls else ())


# -- prompts ---------------------------------------------------------------------------------------


def _template_message(m: Message) -> dict[str, Any]:
    """An OpenAI message as chat templates read it (Hugging Face's convention: arguments as objects)."""
    role = "system" if m.role == "developer" else m.role
    out: dict[str, Any] = {"role": role, "content": m.content}
    if m.tool_calls:
        calls = []
        for c in m.tool_calls:
            try:
                args: Any = json.loads(c.arguments) if c.arguments else {}
            except ValueError:
                args = c.arguments
            calls.append({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": args}})
        out["tool_calls"] = calls
    if m.role == "tool":
        out["tool_call_id"] = m.tool_call_id
        if m.name:
            out["name"] = m.name
    return out


class TemplateRenderer:
    """Renders chats with the checkpoint's own chat template (every family but gpt-oss)."""

    def __init__(self, tokenizer: Tokenizer, family: FamilyTraits, model: str) -> None:
        self.tok = tokenizer
        self.family = family
        self.model = model

    def render(
        self,
        messages: Sequence[Message],
        *,
        effort: ReasoningEffort = "medium",
        tools: Sequence[Tool] = (),
        today: str | None = None,
    ) -> list[int]:
        """Prompt ids ending where the assistant's answer starts. ``effort`` is not read (the gateway refuses
        ``reasoning_effort`` for a model that does not reason); a template's refusal is a 400 that says why."""
        from jinja2 import TemplateError

        if not self.family.system_role and any(m.role in ("system", "developer") for m in messages):
            raise InvalidRequest(
                f"model {self.model!r} ({self.family.name}) has no system role: put the instructions in the first "
                "user message",
                param="messages",
            )
        specs = [
            {"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters or {"type": "object", "properties": {}}}}
            for t in tools
        ]  # fmt: skip
        try:
            text = self.tok.apply_chat_template(  # type: ignore[attr-defined]
                [_template_message(m) for m in messages], tools=specs or None, add_generation_prompt=True,
                tokenize=False,
            )  # fmt: skip
        except TemplateError as e:
            raise InvalidRequest(
                f"model {self.model!r}'s chat template refuses these messages: {e}", param="messages"
            ) from None
        return list(self.tok.encode(text, add_special_tokens=False))


# -- output ----------------------------------------------------------------------------------------


class TemplateTextStream:
    """Plain text from generated ids; with ``tools`` offered (Llama 3.x), an answer that is one JSON object
    ``{"name": <an offered tool>, "parameters": {...}}`` becomes a tool call.

    Same interface as :class:`HarmonyStreamParser`. Special ids are structure, never text. An answer
    that starts with ``{`` (or Llama's ``<|python_tag|>``) while tools are offered is held until the
    answer ends, since only the whole of it says whether it is a call; anything else streams as it comes.
    """

    stopped_by: str | None = None

    def __init__(self, tokenizer: Tokenizer, special: frozenset[int], request_id: str, tools: Sequence[str]) -> None:
        self.text = IncrementalDecoder(tokenizer)
        self.special = special
        self.request_id = request_id
        self.tools = frozenset(tools)
        self.calls = 0
        self._held: str | None = "" if self.tools else None  # None: streaming

    def feed(self, token_ids: Sequence[int]) -> list[Delta]:
        new = self.text.feed([t for t in token_ids if t not in self.special])
        if self._held is None:
            return [Delta("content", new)] if new else []
        self._held += new
        head = self._held.lstrip()
        if not head or head.startswith(("{", "<|python_tag|>")):
            return []  # may still be a call
        out, self._held = self._held, None
        return [Delta("content", out)]

    def finish(self) -> list[Delta]:
        new = self.text.flush()
        if self._held is None:
            return [Delta("content", new)] if new else []
        whole, self._held = self._held + new, None
        call = self._call(whole)
        if call is None:
            return [Delta("content", whole)] if whole else []
        self.calls += 1
        self.stopped_by = "call"
        return [Delta("tool_call", tool_call=call)]

    def _call(self, text: str) -> ToolCall | None:
        body = text.strip().removeprefix("<|python_tag|>").strip()
        try:
            obj = json.loads(body)
        except ValueError:
            return None
        if not isinstance(obj, dict) or obj.get("name") not in self.tools:
            return None
        args = obj.get("parameters", obj.get("arguments", {}))
        if not isinstance(args, dict):
            return None
        return ToolCall(f"call_{self.request_id}_1", obj["name"], json.dumps(args, ensure_ascii=False))

    def answering(self, token_id: int) -> bool:
        """Whether the token just fed is part of the answer's text."""
        return token_id not in self.special
