"""cartrm against TRL's ``RewardTrainer`` on identical inputs, and ``cart evaluate`` against a plain inference loop.

Inputs: the first ``--pairs`` pairs of the HH-RLHF file whose chosen and rejected texts both fit in
``--fit-tokens`` MiniLM tokens, so neither tool truncates or drops anything. Both trainers see the same token
ids (TRL gets them pre-tokenised, so it adds no EOS), batch 16 pairs, 1 epoch, lr 1e-4, max length 256, the same
model (``--model``: minilm by default, smollm2-135m once prepared, or a folder), seed 0; with ``--lora-r R`` both
train rank-R LoRA adapters through peft with the same settings (alpha 2R, peft's default target modules, the reward
head in full). TRL runs twice: with its defaults (gradient checkpointing on) and with
``gradient_checkpointing=False``, engine for engine with cartrm (which does not checkpoint). TRL keeps its other
defaults (dropout off) except ``bf16=False``: its default
bf16 autocast is very slow on a CPU without native bf16 instructions (AVX2 only here: one TRL run with bf16 had not
finished after 14 minutes, against ~2.5 minutes in float32), so both sides run float32. Every measurement runs in a
fresh Python process: training pairs/s over the training call (TRL: ``train_runtime``; cartrm: the whole
``train()`` call, tokenisation and checkpoint writes included), and the process's peak resident memory.

Scoring: texts/s of ``cartrm.evaluation.evaluate`` (what ``cart evaluate`` runs) against a plain loop of
``model(**batch)`` over the texts in file order, tokenised per batch of 64 with padding, in
``torch.inference_mode()``, on the same texts at the same max length.

Run: ``pip install -e ".[bench,lora]" && python bench/vs_trl.py [--model minilm] [--lora-r 0] [--data FILE]
[--repeats 1]``; rewrites the tables
at the top of ``bench/RESULTS.md`` (``--out`` to change) and keeps what follows its marker line. Needs the
HH-RLHF file of ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "hh-rlhf-harmless-base-1500.jsonl.gz"
BATCH_PAIRS, LEARNING_RATE, MAX_LENGTH, SCORE_BATCH = 16, 1e-4, 256, 64
OTHER_MEASUREMENTS = "<!-- measured by other commands: kept when this script rewrites the tables above -->"


def model_folder(name: str) -> Path:
    """The HF folder of ``--model``: the built-in MiniLM, a prepared built-in (``cart models prepare``) or a folder."""
    from cartrm.models.builtin import minilm_path
    from cartrm.models.prepared import PREPARED, prepared_folder

    return minilm_path() if name == "minilm" else prepared_folder(name) if name in PREPARED else Path(name)


def load_tokenizer(name: str):
    from cartrm.models import RewardModel

    return RewardModel.load(name).tokenizer  # pad token set as cartrm and TRL both need it


def prepare(data: Path, n_pairs: int, fit_tokens: int, folder: Path, model: str) -> Path:
    """The first ``n_pairs`` pairs whose two texts both fit in ``fit_tokens`` tokens, as JSON Lines."""
    import numpy as np

    from cartrm.data import load_preferences

    tokenizer = load_tokenizer(model)
    dataset = load_preferences(data)
    pairs = dataset.render(tokenizer)
    chosen = np.array([len(ids) for ids in tokenizer([p.prompt + p.chosen for p in pairs])["input_ids"]])
    rejected = np.array([len(ids) for ids in tokenizer([p.prompt + p.rejected for p in pairs])["input_ids"]])
    keep = np.flatnonzero((chosen <= fit_tokens) & (rejected <= fit_tokens))[:n_pairs]
    if len(keep) < n_pairs:
        raise SystemExit(f"{data}: only {len(keep)} pairs fit in {fit_tokens} tokens")
    path = folder / "pairs.jsonl"
    dataset.select(keep).save(path)
    return path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_trl(path: Path, folder: Path, options: dict, checkpointing: bool = True) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from cartrm.data import load_preferences

    tokenizer = load_tokenizer(options["model"])
    pairs = load_preferences(path).render(tokenizer)
    rows = {
        "chosen_ids": [tokenizer(p.prompt + p.chosen)["input_ids"] for p in pairs],
        "rejected_ids": [tokenizer(p.prompt + p.rejected)["input_ids"] for p in pairs],
    }
    model = AutoModelForSequenceClassification.from_pretrained(model_folder(options["model"]), num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(
        output_dir=str(folder / "trl"),
        per_device_train_batch_size=BATCH_PAIRS,
        num_train_epochs=1,
        learning_rate=LEARNING_RATE,
        max_length=MAX_LENGTH,
        bf16=False,
        gradient_checkpointing=checkpointing,
        report_to="none",
        save_strategy="no",
        logging_steps=10,
        disable_tqdm=True,
        seed=0,
        use_cpu=True,
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(rows),
        processing_class=tokenizer,
        peft_config=lora_config(options["lora_r"]),
    )
    output = trainer.train()
    return {"pairs": len(pairs), "seconds": output.metrics["train_runtime"]}


def train_trl_plain(path: Path, folder: Path, options: dict) -> dict:
    return train_trl(path, folder, options, checkpointing=False)


def lora_config(r: int):
    """TRL's side of the LoRA setting cartrm's ``--lora-r R`` trains (peft's default targets, head in full)."""
    if not r:
        return None
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, task_type="SEQ_CLS")


def train_cartrm(path: Path, folder: Path, options: dict) -> dict:
    from cartrm.data import load_preferences
    from cartrm.models import RewardModel
    from cartrm.training import TrainConfig, train

    dataset = load_preferences(path)
    model = RewardModel.load(options["model"], seed=0)
    r = options["lora_r"]
    lora = {"lora_r": r, "lora_alpha": 2 * r} if r else {}
    split = {"max_batch_tokens": options["max_batch_tokens"]} if "max_batch_tokens" in options else {}
    config = TrainConfig(
        batch_size=BATCH_PAIRS, learning_rate=LEARNING_RATE, max_length=MAX_LENGTH, epochs=1, seed=0, **lora, **split
    )
    started = time.perf_counter()
    result = train(model, dataset, config, folder / "cartrm", progress=False)
    return {"pairs": len(dataset), "seconds": time.perf_counter() - started, "steps": result.global_step}


def train_cartrm_one_pass(path: Path, folder: Path, options: dict) -> dict:
    """cartrm with each batch in one forward pass (``max_batch_tokens=0``), as TRL runs it: what the CPU split of
    batches at 2,048 padded tokens costs or saves."""
    return train_cartrm(path, folder, {**options, "max_batch_tokens": 0})


def score_plain(path: Path, folder: Path, options: dict) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification

    from cartrm.data import load_preferences

    tokenizer = load_tokenizer(options["model"])
    model = AutoModelForSequenceClassification.from_pretrained(model_folder(options["model"]), num_labels=1).eval()
    model.config.pad_token_id = tokenizer.pad_token_id
    pairs = load_preferences(path).render(tokenizer)
    texts = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(texts), SCORE_BATCH):
            batch = tokenizer(
                texts[start : start + SCORE_BATCH],
                padding=True,
                truncation=True,
                max_length=MAX_LENGTH,
                return_tensors="pt",
            )
            model(**batch)
    return {"texts": len(texts), "seconds": time.perf_counter() - started}


def score_cartrm(path: Path, folder: Path, options: dict) -> dict:
    from cartrm.data import load_preferences
    from cartrm.evaluation import evaluate
    from cartrm.models import RewardModel

    dataset = load_preferences(path)
    model = RewardModel.load(options["model"], max_length=MAX_LENGTH)
    started = time.perf_counter()
    evaluate(model, dataset, batch_size=SCORE_BATCH)
    return {"texts": 2 * len(dataset), "seconds": time.perf_counter() - started}


CHILDREN = {
    "trl-train": train_trl,
    "trl-train-no-checkpointing": train_trl_plain,
    "cartrm-train": train_cartrm,
    "cartrm-train-one-pass": train_cartrm_one_pass,
    "plain-score": score_plain,
    "cartrm-score": score_cartrm,
}
UNITS = {name: "texts" if name.endswith("score") else "pairs" for name in CHILDREN}


def run_child(name: str, path: Path, options: dict) -> dict:
    """One measurement in a fresh interpreter; its last stdout line is the JSON result."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                name,
                "--input",
                str(path),
                "--work",
                tmp,
                "--options",
                json.dumps(options),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    import torch

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{os.cpu_count()} cores ({cpu}), torch {torch.__version__}, Python {platform.python_version()}"


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{name} {version(name)}" for name in ("cartrm", "trl", "transformers", "accelerate", "peft"))


def best(results: list[dict], unit: str) -> dict:
    """The fastest repeat's rate (the least disturbed by other work) and the largest peak memory."""
    rates = [r[unit] / r["seconds"] for r in results]
    return {
        "rate": max(rates),
        "rss": max(r["peak_rss_mb"] for r in results),
        "seconds": min(r["seconds"] for r in results),
    }


def report(summary: dict[str, dict], args: argparse.Namespace, n_pairs: int, n_texts: int) -> str:
    trl, plain_trl, cart = (summary[k] for k in ("trl-train", "trl-train-no-checkpointing", "cartrm-train"))
    plain, scored, one_pass = summary["plain-score"], summary["cartrm-score"], summary["cartrm-train-one-pass"]
    lora = f", LoRA r={args.lora_r} (alpha {2 * args.lora_r}, peft's default targets)" if args.lora_r else ""

    def ratios(row: dict, base: dict) -> str:
        return f"{row['rate'] / base['rate']:.2f}× / {row['rss'] / base['rss']:.2f}×"

    return "\n".join(
        [
            f"# cartrm against TRL's RewardTrainer: {args.model}{lora} (same run, identical inputs)",
            "",
            f"Measured {date.today().isoformat()} on {machine()}; {versions()}.",
            f"Command: `python bench/vs_trl.py --model {args.model} --lora-r {args.lora_r} --pairs {args.pairs} "
            f"--fit-tokens {args.fit_tokens} --repeats {args.repeats}`",
            f"Inputs: the first {n_pairs} pairs of `{Path(args.data).name}` whose chosen and rejected both fit in "
            f"{args.fit_tokens} tokens; batch {BATCH_PAIRS} pairs, 1 epoch, lr {LEARNING_RATE:g}, max length "
            f"{MAX_LENGTH}, seed 0. Each figure is from a fresh process; rates are the best of {args.repeats} "
            "repeat(s), memory the largest peak RSS (see the docstring of `bench/vs_trl.py`). Both sides train in "
            "float32 (TRL gets `bf16=False`: its default bf16 autocast is very slow on CPUs without native bf16 "
            "instructions); cartrm's `train()` time includes its tokenisation and checkpoint writes, TRL's "
            "`train_runtime` does not.",
            "",
            "| training | pairs/s | peak RSS (MB) | speed / memory vs TRL without checkpointing | vs TRL's defaults |",
            "|---|---|---|---|---|",
            f"| TRL `RewardTrainer`, its defaults (gradient checkpointing on) | {trl['rate']:.2f} | {trl['rss']:.0f} | "
            f"{ratios(trl, plain_trl)} | 1.00× / 1.00× |",
            f"| TRL `RewardTrainer`, `gradient_checkpointing=False` | {plain_trl['rate']:.2f} | "
            f"{plain_trl['rss']:.0f} | "
            f"1.00× / 1.00× | {ratios(plain_trl, trl)} |",
            f"| `cartrm` `train()` (`cart train --method bt`) | {cart['rate']:.2f} | {cart['rss']:.0f} | "
            f"**{ratios(cart, plain_trl)}** | {ratios(cart, trl)} |",
            f"| `cartrm`, each batch in one forward pass (`--max-batch-tokens 0`) | {one_pass['rate']:.2f} | "
            f"{one_pass['rss']:.0f} | {ratios(one_pass, plain_trl)} | {ratios(one_pass, trl)} |",
            "",
            f"| scoring {n_texts} texts (batch {SCORE_BATCH}) | texts/s | peak RSS (MB) | ratio to the plain loop |",
            "|---|---|---|---|",
            f"| plain `model(**batch)` loop in `torch.inference_mode()` | {plain['rate']:.1f} | {plain['rss']:.0f} | "
            "1.00× |",
            f"| `cartrm.evaluation.evaluate` (`cart evaluate`) | {scored['rate']:.1f} | {scored['rss']:.0f} | "
            f"**{scored['rate'] / plain['rate']:.2f}×** |",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--model", default="minilm", help="minilm, smollm2-135m (prepared) or a model folder")
    parser.add_argument("--lora-r", type=int, default=0, help="LoRA rank on both sides (0: full fine-tune)")
    parser.add_argument("--pairs", type=int, default=320)
    parser.add_argument("--fit-tokens", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", help="the results file (default: bench/RESULTS[-MODEL][-loraR].md)")
    parser.add_argument(
        "--only", choices=sorted(CHILDREN), action="append", help="run only these measurements (no report)"
    )
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--options", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = CHILDREN[args.child](Path(args.input), Path(args.work), json.loads(args.options))
        print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}))
        return
    if not Path(args.data).exists():
        raise SystemExit(f"{args.data} not found: pass --data (the HH-RLHF file of ../shared/data)")
    options = {"model": args.model, "lora_r": args.lora_r}
    with tempfile.TemporaryDirectory() as tmp:
        path = prepare(Path(args.data), args.pairs, args.fit_tokens, Path(tmp), args.model)
        names = args.only or list(CHILDREN)
        results: dict[str, list[dict]] = {name: [] for name in names}
        for _ in range(args.repeats):
            for name in names:
                results[name].append(run_child(name, path, options))
                print(name, json.dumps(results[name][-1]), flush=True)
    if args.only:
        return
    summary = {name: best(values, UNITS[name]) for name, values in results.items()}
    text = report(summary, args, results["cartrm-train"][0]["pairs"], results["cartrm-score"][0]["texts"])
    suffix = ("" if args.model == "minilm" else f"-{Path(args.model).name}") + (
        f"-lora{args.lora_r}" * bool(args.lora_r)
    )
    out = Path(args.out or HERE / f"RESULTS{suffix}.md")
    kept = out.read_text().partition(OTHER_MEASUREMENTS)[2] if out.exists() else ""
    out.write_text(text + (f"\n{OTHER_MEASUREMENTS}{kept}" if kept else ""))
    print(text)


if __name__ == "__main__":
    main()
