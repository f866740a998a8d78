"""The model families ossfleet serves, and what each one's architecture and chat format allow.

Plain data, read by the catalog (how to count a family's parameters), the
config (which weight formats a model may keep), the tiny checkpoints, the
engine (which transformers classes build a stage) and the gateway (how a
prompt is rendered, whether ``tools`` or ``reasoning_effort`` are accepted).

- **gpt-oss**: harmony prompts and output (channels, tool calls, reasoning
  effort), attention sinks, alternating sliding-window layers, MoE experts
  released in MXFP4.
- **llama** (Llama 3.x): GQA, RoPE with llama3 scaling; the checkpoint's chat
  template; tool calls as the JSON object Llama 3.1 writes
  (``{"name": ..., "parameters": ...}``).
- **gemma2** (Gemma 2): alternating sliding-window and global layers,
  attention and final logit soft-capping, tied embeddings; its template has
  no system role.
- **mixtral** (Mixtral): sparse MoE, two experts of eight per token; its
  template has no tool calls ossfleet parses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["gpt-oss", "llama", "gemma2", "mixtral"]
ToolFormat = Literal["harmony", "llama_json"]


@dataclass(frozen=True)
class FamilyTraits:
    name: Family
    model_type: str  # transformers' ``config.model_type`` of its checkpoints
    harmony: bool  # prompts rendered as harmony (else by the checkpoint's chat template), output parsed as harmony
    reasons: bool  # accepts ``reasoning_effort``
    tool_format: ToolFormat | None  # the tool-call format ossfleet parses (None: tools are refused)
    system_role: bool  # the chat template takes a system message
    moe: bool  # experts per layer (the catalog counts them; the engine picks the experts kernel)
    weight_formats: tuple[str, ...]  # how the engine may keep the weights (the released formats)


FAMILIES: dict[str, FamilyTraits] = {
    f.name: f
    for f in (
        FamilyTraits("gpt-oss", "gpt_oss", True, True, "harmony", True, True, ("bf16", "mxfp4")),
        FamilyTraits("llama", "llama", False, False, "llama_json", True, False, ("bf16",)),
        FamilyTraits("gemma2", "gemma2", False, False, None, False, False, ("bf16",)),
        FamilyTraits("mixtral", "mixtral", False, False, None, True, True, ("bf16",)),
    )
}


def family_of_model_type(model_type: str) -> FamilyTraits:
    """The family of a checkpoint, from its ``config.json``'s ``model_type``."""
    for f in FAMILIES.values():
        if f.model_type == model_type:
            return f
    known = {f.model_type: f.name for f in FAMILIES.values()}
    raise ValueError(f"checkpoints of model_type {model_type!r} are not served; ossfleet serves {known}")
