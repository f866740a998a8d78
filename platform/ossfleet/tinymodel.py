"""Builds tiny gpt-oss checkpoints for tests and the laptop demo.

A tiny checkpoint is a randomly initialised ``GptOssForCausalLM`` (a few layers,
sliding-window and full attention alternating, a few experts) and a byte-level
BPE tokenizer trained locally with the ``tokenizers`` library. The tokenizer
carries the harmony special tokens and a chat template, so that the checkpoint
loads through ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained``: the same code path as the real gpt-oss
checkpoints. Nothing is downloaded.

With ``mxfp4=True`` the checkpoint is in the format OpenAI released: the
experts quantized to MXFP4 (``*_blocks`` / ``*_scales``, see
``ossfleet.engine.mxfp4``), every other tensor in bf16, and the
``quantization_config`` of openai/gpt-oss-20b in ``config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# The harmony special tokens, in the order their ids are assigned (0..7).
HARMONY_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|channel|>",
    "<|return|>",
    "<|call|>",
    "<|constrain|>",
)

# A chat template for tools that read it (the engine renders harmony itself,
# see ``ossfleet.harmony``); it produces the same text for plain chats.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|start|>{{ message['role'] }}<|message|>{{ message['content'] }}<|end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start|>assistant{% endif %}"
)

# Text the tokenizer is trained on: enough English and harmony header words
# that prompts tokenize into a few tokens per word.
_CORPUS = """
system user assistant developer analysis commentary final functions tool json
You are ChatGPT, a large language model trained by OpenAI. Knowledge cutoff: 2024-06
Current date: 2026-11-23. Reasoning: low medium high. Valid channels: analysis, commentary, final.
Channel must be included for every message. Calls to these tools must go to the commentary channel.
# Instructions # Tools ## functions namespace functions { type get_weather = (_: { location: string, }) => any; }
to=functions.get_weather <|constrain|>json {"location": "Paris"} The weather in Paris is sunny.
The quick brown fox jumps over the lazy dog. Hello, how are you today? I am fine, thank you.
What is the capital of France? Paris is the capital of France. Explain the theory of relativity.
Write a short poem about the sea. Summarize the following document in three sentences.
Translate this sentence into German. The model generates tokens one at a time, streaming them.
Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024 2025 2026; punctuation , . ! ? : ; ( ) [ ] { } " ' - _ / \\
"""


@dataclass(frozen=True)
class TinySpec:
    """The shape of a tiny checkpoint."""

    layers: int = 2
    hidden_size: int = 64
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 16
    experts: int = 4
    experts_per_token: int = 2
    vocab_size: int = 1000
    sliding_window: int = 16
    max_position_embeddings: int = 4096
    seed: int = 0
    mxfp4: bool = False


def build_tokenizer(vocab_size: int):  # -> PreTrainedTokenizerFast
    """Train a byte-level BPE tokenizer with the harmony special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(HARMONY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|return|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in HARMONY_SPECIAL_TOKENS if t not in ("<|return|>", "<|endoftext|>")],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_checkpoint(directory: str | Path, spec: TinySpec | None = None) -> Path:
    """Write a tiny gpt-oss checkpoint (model + tokenizer) to ``directory``.

    The model's vocabulary equals the tokenizer's, and its ``eos_token_id`` lists
    the assistant stop tokens ``<|return|>`` and ``<|call|>``.
    """
    import torch
    from transformers import GenerationConfig, GptOssConfig, GptOssForCausalLM

    spec = spec or TinySpec()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(spec.vocab_size)
    vocab = len(tokenizer)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in HARMONY_SPECIAL_TOKENS}
    stop_ids = [ids["<|return|>"], ids["<|call|>"]]
    config = GptOssConfig(
        num_hidden_layers=spec.layers,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.hidden_size,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.head_dim,
        num_local_experts=spec.experts,
        num_experts_per_tok=spec.experts_per_token,
        vocab_size=vocab,
        sliding_window=spec.sliding_window,
        max_position_embeddings=spec.max_position_embeddings,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(spec.layers)],
        pad_token_id=ids["<|endoftext|>"],
        eos_token_id=stop_ids,
    )
    torch.manual_seed(spec.seed)
    model = GptOssForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=stop_ids, pad_token_id=ids["<|endoftext|>"], do_sample=False
    )
    model.save_pretrained(out)
    if spec.mxfp4:
        _write_mxfp4(model, out)
    tokenizer.save_pretrained(out)
    (out / "ossfleet-tiny.json").write_text(json.dumps(spec.__dict__, indent=2) + "\n")
    return out


# openai/gpt-oss-20b's config.json, "quantization_config".
MXFP4_QUANTIZATION_CONFIG = {
    "modules_to_not_convert": [
        "model.layers.*.self_attn",
        "model.layers.*.mlp.router",
        "model.embed_tokens",
        "lm_head",
    ],
    "quant_method": "mxfp4",
}


def _write_mxfp4(model, out: Path) -> None:  # model: GptOssForCausalLM
    """Rewrite the saved weights as released: MXFP4 experts, bf16 elsewhere."""
    import torch
    from safetensors.torch import save_file

    from ossfleet.engine.mxfp4 import PROJECTIONS, quantize

    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        proj = name.rsplit(".", 1)[-1]
        if ".mlp.experts." in name and proj in PROJECTIONS:
            # transformers holds [E, in, out]; the release stores rows = out features.
            blocks, scales = quantize(t.transpose(1, 2))
            tensors[f"{name}_blocks"], tensors[f"{name}_scales"] = blocks, scales
        else:
            tensors[name] = t.detach().to(torch.bfloat16).contiguous()
    for f in out.glob("model*.safetensors*"):
        f.unlink()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((out / "config.json").read_text())
    cfg["quantization_config"] = MXFP4_QUANTIZATION_CONFIG
    cfg["dtype"] = "bfloat16"
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def make_tiny_adapter(
    base: str | Path,
    directory: str | Path,
    *,
    rank: int = 4,
    alpha: int = 8,
    seed: int = 0,
    modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
    base_name: str = "openai/gpt-oss-20b",
) -> Path:
    """A random LoRA adapter for a (tiny) checkpoint, written by PEFT itself: ``adapter_config.json`` and
    ``adapter_model.safetensors``, exactly as a fine-tune saves them. Its weights are random (PEFT's
    ``init_lora_weights=False``), so it changes the model's tokens; ``base_name`` goes in the config as the
    model it was trained on (what a fine-tune of the released checkpoint says)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = Path(directory)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(modules), lora_dropout=0.0,
                     init_lora_weights=False)  # fmt: skip
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(str(out))
    config_path = out / "adapter_config.json"
    saved = json.loads(config_path.read_text())
    saved["base_model_name_or_path"] = base_name
    config_path.write_text(json.dumps(saved, indent=2) + "\n")
    (out / "README.md").unlink(missing_ok=True)  # PEFT's model-card template, not part of the adapter
    return out
