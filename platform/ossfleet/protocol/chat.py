"""A validated request, whichever API or batch line it came from, and the checks every one passes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ossfleet.errors import InvalidRequest
from ossfleet.harmony import Message, ReasoningEffort, Tool
from ossfleet.structured import OutputFormat

# A raw completion's prompt: text (tokenized by the gateway) or token ids (checked against the vocabulary).
Prompt = str | tuple[int, ...]


@dataclass(frozen=True)
class RequestMeta:
    """What a transport carries beside the body (HTTP headers, gRPC metadata), as plain values: the band the
    client asks for, its idempotency key (at most 128 characters) and the end user."""

    priority: str | None = None
    idempotency_key: str = ""
    end_user: str = ""  # the x-ossfleet-user header: who the request is for (A/B aliases stick to it)


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request, whichever API it came through."""

    model: str
    messages: Sequence[Message]
    max_tokens: int
    tools: Sequence[Tool] = ()
    reasoning_effort: ReasoningEffort | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    min_tokens: int = 0
    ignore_eos: bool = False
    priority: str | None = None
    idempotency_key: str = ""
    # The end user (OpenAI's ``user``, else the x-ossfleet-user header): an A/B alias keeps a user on one model.
    end_user: str = ""
    # A raw completion (/v1/completions): this text is the whole prompt, with no
    # harmony rendering, and the output is returned as plain text.
    prompt: Prompt | None = None
    # A line of a queue-mode batch job: the lowest band, the batch discount, no
    # rate limits (the job's window bounds it) and not one of the tenant's streams.
    batch: bool = False
    # Structured output: the output must be this JSON value or tool call (ossfleet.structured).
    output_format: OutputFormat | None = None
    # Log-probabilities of the answer's tokens: None for none, k >= 0 for the k most likely alternatives too.
    logprobs: int | None = None
    # Completions wanted (each its own request through the queue, admitted all or nothing), and for a
    # raw completion the further prompts of a list (each answered n times, after ``prompt``'s).
    n: int = 1
    more_prompts: tuple[Prompt, ...] = ()

    def choices(self) -> list[ChatRequest]:
        """The single requests this one stands for, in choice order: for each prompt, n choices; choice
        j > 0 of a seeded request draws from a seed derived from the request's and j."""
        prompts = [self.prompt, *self.more_prompts]
        return [
            replace(self, prompt=p, n=1, more_prompts=(), seed=choice_seed(self.seed, j))
            for p in prompts
            for j in range(self.n)
        ]


def choice_seed(seed: int | None, j: int) -> int | None:
    """Choice 0 keeps the request's seed (so n=1 and the first of n agree); the others hash it with j."""
    if seed is None or j == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{j}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _check_text(value: str | None, field_name: str) -> None:
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidRequest(
            f"{field_name} is not valid Unicode (a lone surrogate at character {e.start}); send UTF-8 text",
            param=field_name,
        ) from None


# The JSON of a request's tool parameter schemas, all tools together. Checking a schema against its
# meta-schema is pure Python and grows with its size (a 780 KB schema took 4.5 s): 64 KiB is about
# 1,100 properties, checked in a quarter of a second, off the gateway's event loop.
MAX_TOOL_SCHEMA_BYTES = 65_536


def check_request(req: ChatRequest) -> None:
    """Input checks every request passes before it is rendered, whichever API or batch line it came from.

    Every string must be valid Unicode (JSON can carry lone surrogates, which no tokenizer accepts), and
    each tool's ``parameters`` must be a valid JSON Schema (checked by the ``jsonschema`` library against
    its draft's meta-schema). Raises :class:`InvalidRequest` naming the field.
    """
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    for i, p in enumerate((req.prompt, *req.more_prompts)):
        if isinstance(p, str):
            _check_text(p, "prompt" if not req.more_prompts else f"prompt[{i}]")
    for i, m in enumerate(req.messages):
        _check_text(m.content, f"messages[{i}].content")
        _check_text(m.reasoning, f"messages[{i}].reasoning")
        _check_text(m.name, f"messages[{i}].name")
        for j, c in enumerate(m.tool_calls):
            _check_text(c.name, f"messages[{i}].tool_calls[{j}].function.name")
            _check_text(c.arguments, f"messages[{i}].tool_calls[{j}].function.arguments")
    for i, s in enumerate(req.stop):
        _check_text(s, f"stop[{i}]")
    total = 0
    for i, t in enumerate(req.tools):
        _check_text(t.name, f"tools[{i}].function.name")
        _check_text(t.description, f"tools[{i}].function.description")
        try:
            total += len(json.dumps(t.parameters))
            if total > MAX_TOOL_SCHEMA_BYTES:  # before the meta-schema check, whose cost grows with the size
                raise InvalidRequest(
                    f"the tools' parameter schemas take more than {MAX_TOOL_SCHEMA_BYTES} bytes of JSON together; "
                    "send fewer or smaller schemas",
                    param=f"tools[{i}].function.parameters",
                )
            validator_for(t.parameters).check_schema(t.parameters)
        except SchemaError as e:
            where = "/".join(str(p) for p in e.path) or "(root)"
            raise InvalidRequest(
                f"tools[{i}].function.parameters is not a valid JSON Schema at {where}: {e.message}",
                param=f"tools[{i}].function.parameters",
            ) from None
        except (TypeError, ValueError, RecursionError) as e:
            raise InvalidRequest(
                f"tools[{i}].function.parameters is not a JSON Schema object ({type(e).__name__})",
                param=f"tools[{i}].function.parameters",
            ) from None


def validate_messages(messages: Sequence[Message], max_messages: int) -> None:
    if not messages:
        raise InvalidRequest("messages must not be empty", param="messages")
    if len(messages) > max_messages:
        raise InvalidRequest(f"too many messages ({len(messages)} > {max_messages})", param="messages")
    if not any(m.role == "user" for m in messages):
        raise InvalidRequest("messages must include at least one user message", param="messages")
