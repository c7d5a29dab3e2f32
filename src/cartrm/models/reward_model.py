"""Any Hugging Face model as a scalar reward model ``R(x)``.

The model is ``AutoModelForSequenceClassification`` with ``num_labels=1``; decoder models score the last
non-pad token (transformers' own rule, which needs ``config.pad_token_id``: set from the tokenizer, which
gets its EOS token as pad when it has none). Long inputs are truncated from the left so the end of the
response is kept. A saved model is a plain HF folder that loads with
``AutoModelForSequenceClassification.from_pretrained`` and gives the same scores.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError

from cartrm.errors import CartError
from cartrm.io import atomic_directory
from cartrm.models.builtin import BUILTIN_NAMES, TINY_CHAT_TEMPLATE, minilm_path, tiny_config
from cartrm.models.prepared import PREPARED, prepared_folder

DEFAULT_MAX_LENGTH = 512
SENTINEL_MAX_LENGTH = 10**9  # transformers' "no limit" model_max_length is int(1e30)
ENCODE_CHUNK = 256
UNFINGERPRINTED_CONFIG_KEYS = {"_name_or_path", "transformers_version"}  # where/by what it was saved, not what it is


@dataclass(frozen=True)
class TokenBatch:
    """A padded batch of texts: token ids, attention mask and response-token mask, each (B, T)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor


@dataclass
class EncodedTexts:
    """Tokenised texts (unpadded); ``response_mask`` marks the tokens of the response."""

    input_ids: list[list[int]]
    response_mask: list[list[int]]

    def __len__(self) -> int:
        return len(self.input_ids)


class RewardModel:
    """A sequence-classification model with one output, its tokenizer, and the maximum input length."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int = DEFAULT_MAX_LENGTH, name: str = "") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        _prepare_tokenizer(tokenizer, model)

    @classmethod
    def load(cls, name_or_path: str | Path, *, max_length: int | None = None, seed: int = 0) -> RewardModel:
        """Load a built-in name (``minilm``, ``tiny-bert``, ``tiny-gpt2``, ``tiny-llama``; ``smollm2-135m`` and
        ``mpnet`` once prepared, :mod:`cartrm.models.prepared`) or an HF folder.

        ``seed`` fixes the initialisation of a fresh scalar head (or of a whole tiny model).
        """
        torch.manual_seed(seed)
        name = str(name_or_path)
        if name in BUILTIN_NAMES[1:]:
            model, tokenizer = _build_tiny(name)
        else:
            path = minilm_path() if name == "minilm" else prepared_folder(name) if name in PREPARED else Path(name)
            if name != "minilm" and not path.is_dir():
                hub = (
                    "; models load from local folders only (nothing is downloaded): fetch it where there is network "
                    f"(huggingface-cli download {name} --local-dir DIR) and pass the folder"
                    if name.count("/") == 1 and not path.exists()
                    else ""
                )
                raise CartError(
                    f"model '{name}' is neither a built-in ({', '.join((*BUILTIN_NAMES, *PREPARED))}) nor a local "
                    f"model folder{hub}"
                )
            model, tokenizer = _from_pretrained(path, quiet=name == "minilm")
        limit = max_length or min(DEFAULT_MAX_LENGTH, model_max_positions(model), _saved_max_length(tokenizer))
        return cls(model.to(default_device()), tokenizer, max_length=limit, name=name)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompts: Sequence[str], responses: Sequence[str], max_length: int | None = None) -> EncodedTexts:
        """Tokenise ``prompt + response`` texts, truncating from the left at ``max_length`` (default: the
        model's ``max_length``), and mark the response tokens.

        Texts are tokenised in chunks so the tokenizer's per-token objects (offsets, strings) never exist
        for the whole dataset at once; only the token ids and response masks are kept.
        """
        input_ids: list[list[int]] = []
        masks: list[list[int]] = []
        for start in range(0, len(prompts), ENCODE_CHUNK):
            chunk_prompts = prompts[start : start + ENCODE_CHUNK]
            texts = [p + r for p, r in zip(chunk_prompts, responses[start : start + ENCODE_CHUNK])]
            encoded = self.tokenizer(
                texts, truncation=True, max_length=max_length or self.max_length, return_offsets_mapping=True
            )
            input_ids.extend(encoded["input_ids"])
            for prompt, offsets in zip(chunk_prompts, encoded["offset_mapping"]):
                masks.append([int(end > len(prompt) and end > begin) for begin, end in offsets])
        return EncodedTexts(input_ids=input_ids, response_mask=masks)

    def token_lengths(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Tokens of each ``prompt + response`` text, without truncation."""
        lengths: list[int] = []
        for start in range(0, len(prompts), ENCODE_CHUNK):
            texts = [
                p + r for p, r in zip(prompts[start : start + ENCODE_CHUNK], responses[start : start + ENCODE_CHUNK])
            ]
            lengths.extend(len(ids) for ids in self.tokenizer(texts, verbose=False)["input_ids"])
        return np.array(lengths, dtype=np.int64)

    def collate(self, encoded: EncodedTexts, indices: Sequence[int] | np.ndarray) -> TokenBatch:
        """Pad the selected sequences into a batch (``input_ids``, ``attention_mask``, ``response_mask``)."""
        rows = [encoded.input_ids[i] for i in indices]
        width = max(len(r) for r in rows)
        pad_id = self.tokenizer.pad_token_id
        left = self.tokenizer.padding_side == "left"
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        response = torch.zeros((len(rows), width), dtype=torch.long)
        for row, i in enumerate(indices):
            n = len(encoded.input_ids[i])
            span = slice(width - n, width) if left else slice(0, n)
            ids[row, span] = torch.tensor(encoded.input_ids[i])
            attention[row, span] = 1
            response[row, span] = torch.tensor(encoded.response_mask[i])
        return TokenBatch(input_ids=ids, attention_mask=attention, response_mask=response)

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        """Rewards of ``prompt + response`` texts, in eval mode without gradients."""
        from tqdm.auto import tqdm

        encoded = self.encode(prompts, responses)
        order = np.argsort([len(ids) for ids in encoded.input_ids], kind="stable")
        rewards = np.empty(len(encoded), dtype=np.float64)
        with self.eval_mode(), torch.inference_mode():
            for start in tqdm(range(0, len(order), batch_size), desc="scoring", disable=not progress, leave=False):
                chunk = order[start : start + batch_size]
                batch = self.collate(encoded, chunk)
                rewards[chunk] = reward_forward(self.model, batch).float().cpu().numpy()
        return rewards

    def score_pairs(self, dataset: Any, batch_size: int = 64, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Rewards of the chosen and of the rejected response of every pair."""
        pairs = dataset.render(self.tokenizer)
        prompts = [p.prompt for p in pairs]
        both = self.score(prompts * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs], batch_size, progress)
        return both[: len(pairs)], both[len(pairs) :]

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Mean-pooled final hidden states (an embedding space for ``density:`` tails and clustering)."""
        from tqdm.auto import tqdm

        encoded = self.encode([""] * len(texts), list(texts))
        out = []
        with self.eval_mode(), torch.inference_mode():
            for start in tqdm(range(0, len(encoded), batch_size), desc="embedding", disable=not progress, leave=False):
                batch = self.collate(encoded, range(start, min(start + batch_size, len(encoded))))
                hidden = self.model(
                    input_ids=batch.input_ids.to(self.device),
                    attention_mask=batch.attention_mask.to(self.device),
                    output_hidden_states=True,
                ).hidden_states[-1]
                mask = batch.attention_mask.to(hidden.device).unsqueeze(-1).to(hidden.dtype)
                out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy())
        return np.concatenate(out)

    def fingerprint(self) -> str:
        """SHA-256 of the config and every weight: ties artifacts such as circuits.json to this exact model."""
        config = {k: v for k, v in self.model.config.to_dict().items() if k not in UNFINGERPRINTED_CONFIG_KEYS}
        digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def save(self, path: str | Path) -> None:
        """Write a standard HF folder (config, safetensors weights, tokenizer) atomically."""
        with atomic_directory(path) as tmp:
            self.save_into(tmp)

    def save_into(self, folder: str | Path) -> None:
        self.tokenizer.model_max_length = self.max_length
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)


DEVICE_KINDS = ("cpu", "cuda", "mps", "xpu")  # devices a model can train and score on ("meta" holds no weights)


def default_device() -> torch.device:
    """Where models are placed: ``CARTRM_DEVICE`` when set, else the first CUDA GPU when there is one, else the CPU.
    A ``CARTRM_DEVICE`` that is not a device kind, or names one this machine lacks, is one line."""
    chosen = os.environ.get("CARTRM_DEVICE")
    if not chosen:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(chosen)
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICE_KINDS:
        raise CartError(f"CARTRM_DEVICE={chosen}: not a device; use one of {', '.join(DEVICE_KINDS)} (e.g. cuda:0)")
    if device.type != "cpu" and not _available(device):
        raise CartError(f"CARTRM_DEVICE={chosen}: this machine has no such device; unset it to use the CPU")
    return device


def _available(device: torch.device) -> bool:
    backend = getattr(torch, device.type, None)
    if backend is None or not backend.is_available():
        return False
    return device.index is None or device.index < backend.device_count()


def reward_forward(model: Any, batch: TokenBatch) -> torch.Tensor:
    """``R(x)`` for a padded batch: the scalar logit of the sequence-classification head, shape (B,)."""
    device = next(model.parameters()).device
    logits = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)).logits
    return logits.squeeze(-1)


def _prepare_tokenizer(tokenizer: Any, model: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise CartError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; cartrm needs offsets to find response tokens"
        )
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise CartError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token")
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.truncation_side = "left"


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def _from_pretrained(path: Path, quiet: bool) -> tuple[Any, Any]:
    """The model and tokenizer in ``path``. transformers' own load report stays silent: :func:`_check_weights_fit`
    turns every real problem into one line (and a base model's fresh reward head is expected)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    if quiet:
        hf_logging.disable_progress_bar()
    _check_tokenizer_files(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model, loading = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:  # RuntimeError: weights of other shapes
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise CartError(f"cannot load a reward model from {path}: {lines[0]}") from exc
    finally:
        hf_logging.set_verbosity(previous)
        hf_logging.enable_progress_bar()
    _check_weights_fit(path, model, loading)
    _check_finite(path, model)
    if model.config.num_labels != 1:
        raise CartError(f"{path} has {model.config.num_labels} outputs; a reward model needs num_labels=1")
    embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > embeddings:
        raise CartError(
            f"{path}: the tokenizer has {len(tokenizer)} tokens but the model embeds only {embeddings}: "
            "the tokenizer and the model do not belong together"
        )
    return model, tokenizer


def _check_weights_fit(path: Path, model: Any, loading: dict[str, Any]) -> None:
    """Strict loading: every weight of the model body must come from the checkpoint, and every checkpoint weight
    meant for the body must be used. Only the reward head may be missing (a base model gets a fresh one), and
    only weights outside the body (another task's head, e.g. a language model's) may go unused."""
    body = model.base_model_prefix + "."
    missing = sorted(k for k in loading["missing_keys"] if k.startswith(body))
    unused = sorted(k for k in loading["unexpected_keys"] if k.startswith(body))
    for problem, keys in (("lacks weights the model needs", missing), ("has weights the model does not use", unused)):
        if keys:
            raise CartError(f"{path}: the checkpoint {problem} ({_shown(keys)}): the weights do not fit config.json")
    head = sorted(k for k in loading["missing_keys"] if not k.startswith(body))
    trained = any(a.endswith("ForSequenceClassification") for a in model.config.architectures or [])
    if head and trained:
        raise CartError(
            f"{path} holds a {model.config.architectures[0]} whose reward head is missing ({_shown(head)}): it would "
            "score with a random head; save the whole model, or remove 'architectures' from config.json to start "
            "a fresh head on purpose"
        )


def _check_tokenizer_files(path: Path) -> None:
    """A folder without its tokenizer would load with a generic one (every word unknown), so it is refused."""
    if not any((path / name).exists() for name in TOKENIZER_FILES):
        raise CartError(
            f"cannot load a reward model from {path}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, …); a "
            "model folder needs the tokenizer it was trained with (tokenizer.save_pretrained(folder))"
        )


def _check_finite(path: Path, model: Any) -> None:
    for name, parameter in model.named_parameters():
        if not torch.isfinite(parameter).all():
            raise CartError(f"{path}: weight {name} holds NaN or infinite values")


def _shown(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _build_tiny(name: str) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    if name != "tiny-bert":
        tokenizer = _decoder_tokenizer(tokenizer)
    if name == "tiny-llama":
        tokenizer.chat_template = TINY_CHAT_TEMPLATE
    model = AutoModelForSequenceClassification.from_config(tiny_config(name, tokenizer))
    return model, tokenizer


def _decoder_tokenizer(tokenizer: Any) -> Any:
    """The WordPiece vocabulary as a decoder's tokenizer: a leading [CLS] as BOS, no trailing [SEP], no token
    types — so a decoder scores the last real token, as GPT-2 / Llama reward models do. A generic fast
    tokenizer keeps this post-processor when saved and reloaded."""
    import copy

    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    backend.post_processor = TemplateProcessing(
        single=f"{tokenizer.cls_token} $A",
        pair=f"{tokenizer.cls_token} $A $B",
        special_tokens=[(tokenizer.cls_token, tokenizer.cls_token_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=tokenizer.cls_token,
        eos_token=tokenizer.sep_token,
        pad_token=tokenizer.pad_token,
        unk_token=tokenizer.unk_token,
        model_input_names=["input_ids", "attention_mask"],
    )


def _saved_max_length(tokenizer: Any) -> int:
    """The tokenizer's ``model_max_length`` where it names a real limit: :meth:`RewardModel.save` writes the
    length a model was trained at there, so a saved model scores as it was trained (HF writes a huge sentinel
    when a tokenizer has no limit)."""
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < SENTINEL_MAX_LENGTH else DEFAULT_MAX_LENGTH


def model_max_positions(model: Any) -> int:
    """The longest input the model's position embeddings allow (``CARTRM_MAX_LENGTH`` or 512 when the config does
    not say)."""
    config = model.config
    for attribute in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    return int(os.environ.get("CARTRM_MAX_LENGTH", DEFAULT_MAX_LENGTH))
