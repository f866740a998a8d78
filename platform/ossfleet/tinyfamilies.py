"""Tiny Llama 3.x, Gemma 2 and Mixtral checkpoints, as their releases lay them out.

Each is a randomly initialised model built from transformers' own config
class for the family (``LlamaConfig`` with llama3 RoPE scaling,
``Gemma2Config`` with soft-capping and alternating sliding-window layers,
``MixtralConfig`` with top-2 of its experts), saved with ``save_pretrained``,
and a byte-level BPE tokenizer trained locally that carries the family's
special tokens, adds its BOS token as the released tokenizers do, and holds
the family's released chat template. ``from_pretrained`` loads them, and
vLLM serves them: the same path as the real checkpoints. Nothing is downloaded.

The shape defaults to head_dim 64 (vLLM's CPU attention kernels refuse 16).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ossfleet.tinymodel import _CORPUS

# Llama 3.1 Instruct's chat template, less the built-in tools (brave_search, wolfram_alpha, code_interpreter)
# ossfleet does not run: the system message with the knowledge cutoff and date, custom tools as JSON in the
# first user message, a tool call as {"name": ..., "parameters": ...}, tool results from the ``ipython`` role.
LLAMA_TEMPLATE = """{{- bos_token }}
{%- if custom_tools is defined %}{%- set tools = custom_tools %}{%- endif %}
{%- if not tools_in_user_message is defined %}{%- set tools_in_user_message = true %}{%- endif %}
{%- if not date_string is defined %}{%- set date_string = "26 Jul 2024" %}{%- endif %}
{%- if not tools is defined %}{%- set tools = none %}{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}{{- "Environment: ipython\\n" }}{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a " }}
    {{- "function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}{{- t | tojson(indent=4) }}{{- "\\n\\n" }}{%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- if tools_in_user_message and not tools is none %}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
    {%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}{{- t | tojson(indent=4) }}{{- "\\n\\n" }}{%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}
        {{- message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

# google/gemma-2-9b-it's chat template, as released: no system role, strictly alternating turns.
GEMMA2_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

# mistralai/Mixtral-8x7B-Instruct-v0.1's chat template, as released: user and assistant turns only.
MIXTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)


@dataclass(frozen=True)
class TokenizerSpec:
    special: tuple[str, ...]  # special tokens, in id order from 0
    bos: str
    eos: str  # the tokenizer's eos_token
    stops: tuple[str, ...]  # generation_config's eos_token_id: every token that ends an answer
    pad: str
    template: str
    unk: str | None = None


TOKENIZERS = {
    "llama": TokenizerSpec(
        ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
         "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>"),
        bos="<|begin_of_text|>", eos="<|eot_id|>", stops=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
        pad="<|finetune_right_pad_id|>", template=LLAMA_TEMPLATE,
    ),
    "gemma2": TokenizerSpec(
        ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
        bos="<bos>", eos="<eos>", stops=("<eos>", "<end_of_turn>"), pad="<pad>", unk="<unk>",
        template=GEMMA2_TEMPLATE,
    ),
    "mixtral": TokenizerSpec(
        ("<unk>", "<s>", "</s>"), bos="<s>", eos="</s>", stops=("</s>",), pad="</s>", unk="<unk>",
        template=MIXTRAL_TEMPLATE,
    ),
}  # fmt: skip

_FAMILY_CORPUS = """
[INST] [/INST] model user assistant system ipython Environment: ipython Cutting Knowledge Date: December 2023
Today Date: 26 Jul 2024 Given the following functions, please respond with a JSON for a function call
with its proper arguments that best answers the given prompt. Respond in the format {"name": function name,
"parameters": dictionary of argument name and its value}. Do not use variables. "type": "function",
"function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object"}}
"""


@dataclass(frozen=True)
class FamilyShape:
    """The shape of a tiny checkpoint of a family."""

    family: str
    layers: int = 2
    hidden_size: int = 256
    intermediate_size: int = 512
    heads: int = 8
    kv_heads: int = 4
    head_dim: int = 64
    experts: int = 4  # mixtral
    experts_per_token: int = 2
    vocab_size: int = 1000
    sliding_window: int = 16  # gemma2's sliding layers
    max_position_embeddings: int = 4096
    seed: int = 0


def build_family_tokenizer(spec: TokenizerSpec, vocab_size: int) -> Any:  # -> PreTrainedTokenizerFast
    """A byte-level BPE tokenizer with the family's special tokens, BOS added on encode, and its template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(spec.special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator([_CORPUS + _FAMILY_CORPUS] * 4, trainer=trainer)
    bos_id = tok.token_to_id(spec.bos)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{spec.bos} $A", pair=f"{spec.bos} $A {spec.bos} $B", special_tokens=[(spec.bos, bos_id)]
    )
    named = {spec.bos, spec.eos, spec.pad, spec.unk}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=spec.bos, eos_token=spec.eos, pad_token=spec.pad, unk_token=spec.unk,
        additional_special_tokens=[t for t in spec.special if t not in named],
    )  # fmt: skip
    fast.chat_template = spec.template
    return fast


def _config(shape: FamilyShape, vocab: int, ids: dict[str, int], spec: TokenizerSpec) -> Any:
    from transformers import Gemma2Config, LlamaConfig, MixtralConfig

    common: dict[str, Any] = dict(
        num_hidden_layers=shape.layers, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads, head_dim=shape.head_dim,
        vocab_size=vocab, max_position_embeddings=shape.max_position_embeddings,
        bos_token_id=ids[spec.bos], eos_token_id=[ids[s] for s in spec.stops], pad_token_id=ids[spec.pad],
    )  # fmt: skip
    if shape.family == "llama":
        # Llama 3.1's RoPE: theta 500k, llama3 scaling of the low frequencies.
        rope = {"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}  # fmt: skip
        return LlamaConfig(**{**common, "max_position_embeddings": 131_072}, rope_parameters=rope,
                           tie_word_embeddings=False)  # fmt: skip
    if shape.family == "gemma2":
        layer_types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(shape.layers)]
        return Gemma2Config(
            **common, sliding_window=shape.sliding_window, layer_types=layer_types,
            query_pre_attn_scalar=shape.head_dim, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
            hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
        )  # fmt: skip
    if shape.family == "mixtral":
        return MixtralConfig(
            **common, num_local_experts=shape.experts, num_experts_per_tok=shape.experts_per_token,
            sliding_window=None, rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
            tie_word_embeddings=False,
        )  # fmt: skip
    raise ValueError(f"no tiny {shape.family!r} checkpoint; one of {sorted(TOKENIZERS)} (or gpt-oss)")


def make_tiny_family_checkpoint(directory: str | Path, shape: FamilyShape) -> Path:
    """Write a tiny checkpoint (model + tokenizer + chat template) of ``shape.family`` to ``directory``."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    if shape.family not in TOKENIZERS:
        raise ValueError(f"no tiny {shape.family!r} checkpoint; one of {sorted(TOKENIZERS)} (or gpt-oss)")
    spec = TOKENIZERS[shape.family]
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_family_tokenizer(spec, shape.vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in spec.special}
    config = _config(shape, len(tokenizer), ids, spec)
    torch.manual_seed(shape.seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    # transformers' initialisation at this size gives near-uniform logits, and with tied embeddings (Gemma 2)
    # the input token wins every step. Small embeddings, wide matrices and perturbed norms give varied,
    # well-separated greedy tokens, so engines that agree with transformers agree token for token.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_tokens" in name:
                p.normal_(0.0, 0.02)
            elif p.dim() > 1:
                p.normal_(0.0, 0.3)
            elif "norm" in name:
                p.add_(torch.randn_like(p))
    model.generation_config = GenerationConfig(
        bos_token_id=ids[spec.bos], eos_token_id=[ids[s] for s in spec.stops], pad_token_id=ids[spec.pad],
        do_sample=False,
    )  # fmt: skip
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "ossfleet-tiny.json").write_text(json.dumps(asdict(shape), indent=2) + "\n")
    return out
