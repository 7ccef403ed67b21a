"""The command line of ``python -m led.train``: options, their checks, and ``main``.

Every check that can be made before loading anything is made here, with a message that names the
option; problems found later (a malformed data line, a model too short for ``--max-source-length``)
raise :class:`UsageError` or :class:`led.train.data.DataError`, which ``main`` prints the same way
(``led.train: error: ...``, exit status 2) instead of a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from led.configuration import BACKEND_NAMES
from led.train.presets import PRESETS


class UsageError(ValueError):
    """The options do not make a valid run (the message says which and why)."""


EXAMPLES = """\
examples:
  # the synthetic long-range task on a CPU (under 3 minutes on one core)
  OMP_NUM_THREADS=1 python -m led.train --task synthetic --config small --max-source-length 2048 \
      --synthetic-min-length 150 --group-by-length --batch-size 8 --lr 1e-3 --warmup-steps 20 \
      --max-steps 1200 --eval-every 200 --output-dir runs/synthetic

  # fine-tune a Hugging Face LED folder on JSON lines {"document": ..., "summary": ...}
  python -m led.train --model path/to/led-base-16384 --train-file train.jsonl --eval-file dev.jsonl \\
      --max-source-length 16384 --max-target-length 512 --bf16 --gradient-checkpointing \\
      --batch-size 1 --grad-accum 16 --lr 3e-5 --warmup-steps 500 --eval-every 1000 \\
      --save-every 1000 --output-dir runs/led-base

  # the same on 8 GPUs (DistributedDataParallel, one process per GPU)
  torchrun --nproc_per_node 8 -m led.train --model path/to/led-base-16384 --train-file train.jsonl ...

  # continue an interrupted run from its latest checkpoint (same options plus --resume)
  python -m led.train ... --output-dir runs/led-base --resume
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):  # also rejects nan and inf
        raise argparse.ArgumentTypeError(f"must be a finite number, 0 or more, got {text}")
    return value


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**62:  # torch seeds are 64-bit; the runs add epochs and ranks to it
        raise argparse.ArgumentTypeError(f"must be in [0, 2**62), got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``python -m led.train --help``)."""
    p = argparse.ArgumentParser(
        prog="python -m led.train",
        description="Fine-tune (or train from scratch) an LED encoder-decoder on long documents, on one "
        "device or under torchrun (DistributedDataParallel).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("model")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="PATH", help="Hugging Face LED folder to fine-tune")
    src.add_argument(
        "--config",
        metavar="NAME|PATH",
        help=f"random initialisation: a preset ({', '.join(PRESETS)}) or a JSON file of LEDConfig fields",
    )
    g.add_argument(
        "--tokenizer", metavar="PATH", help="LED tokenizer folder for JSON lines data (default: --model)"
    )
    g.add_argument(
        "--backend",
        default="auto",
        choices=BACKEND_NAMES,
        help="encoder attention backend (led_kernels), passed as attn_backend (default: auto)",
    )
    g.add_argument("--dropout", type=_probability, help="override the model's dropout")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")

    g = p.add_argument_group("data")
    g.add_argument(
        "--task",
        default="jsonl",
        choices=("jsonl", "synthetic"),
        help="jsonl: --train-file/--eval-file; synthetic: the built-in long-range recall task",
    )
    g.add_argument("--train-file", metavar="JSONL", help="one JSON object per line with the two fields")
    g.add_argument("--eval-file", metavar="JSONL", help="held-out JSON lines file")
    g.add_argument("--document-field", default="document", help="source text field (default: document)")
    g.add_argument("--summary-field", default="summary", help="target text field (default: summary)")
    g.add_argument(
        "--max-source-length", type=_positive_int, default=16384, help="source tokens kept (default 16384)"
    )
    g.add_argument(
        "--max-target-length", type=_positive_int, default=512, help="target tokens kept (default 512)"
    )
    g.add_argument(
        "--global-tokens",
        type=_non_negative_int,
        default=1,
        help="leading tokens with global attention (default: 1, the <s> token; 0: none)",
    )
    g.add_argument(
        "--group-by-length",
        action="store_true",
        help="batch examples of similar length together (less padding on data of mixed lengths)",
    )
    g.add_argument("--num-workers", type=_non_negative_int, default=0, help="DataLoader workers (default 0)")

    g = p.add_argument_group("synthetic task (--task synthetic; see led.train.synthetic)")
    g.add_argument("--synthetic-facts", type=_positive_int, default=4, help="facts per document (default 4)")
    g.add_argument("--synthetic-values", type=_positive_int, default=16, help="value vocabulary (default 16)")
    g.add_argument("--synthetic-filler", type=_positive_int, default=1, help="filler vocabulary (default 1)")
    g.add_argument(
        "--synthetic-min-length",
        type=_positive_int,
        help="shortest training document; lengths log-uniform up to --max-source-length "
        "(default: all training documents have --max-source-length tokens)",
    )
    g.add_argument(
        "--synthetic-train-size", type=_positive_int, default=100_000, help="training examples (default 1e5)"
    )
    g.add_argument(
        "--synthetic-eval-size",
        type=_non_negative_int,
        default=64,
        help="held-out examples (default 64; 0: no evaluation)",
    )

    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=_positive_int, default=1, help="examples per device (default 1)")
    g.add_argument("--eval-batch-size", type=_positive_int, help="default: --batch-size")
    g.add_argument("--grad-accum", type=_positive_int, default=1, help="micro-batches per step (default 1)")
    g.add_argument(
        "--lr",
        type=_positive_float,
        help="peak learning rate (default: 5e-5 with --model, 1e-3 with --config)",
    )
    g.add_argument("--lr-schedule", default="linear", choices=("linear", "cosine", "constant"))
    g.add_argument("--warmup-steps", type=_non_negative_int, default=0, help="linear warm-up (default 0)")
    g.add_argument("--weight-decay", type=_non_negative_float, default=0.01, help="AdamW (default 0.01)")
    g.add_argument(
        "--max-grad-norm", type=_non_negative_float, default=1.0, help="clipping; 0 disables (default 1)"
    )
    g.add_argument("--max-steps", type=_positive_int, help="optimizer steps (overrides --epochs)")
    g.add_argument("--epochs", type=_positive_int, default=1, help="passes over the data (default 1)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    g.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute layers in the backward pass"
    )
    g.add_argument("--seed", type=_seed, default=42, help="model initialisation, data order, dropout")

    g = p.add_argument_group("evaluation, checkpoints, logging")
    g.add_argument("--output-dir", required=True, help="checkpoints, final model and log.jsonl")
    g.add_argument(
        "--overwrite-output-dir", action="store_true", help="allow an output dir that holds an earlier run"
    )
    g.add_argument(
        "--eval-every",
        type=_non_negative_int,
        default=0,
        help="held-out evaluation every N steps (also before the first step and after the last); "
        "0: only before and after (default)",
    )
    g.add_argument(
        "--rouge-samples",
        type=_non_negative_int,
        default=64,
        help="held-out examples generated per evaluation for ROUGE-1/2/L (needs rouge_score; "
        "0: none; default 64)",
    )
    g.add_argument("--eval-num-beams", type=_positive_int, default=1, help="beams for ROUGE generation")
    g.add_argument(
        "--save-every", type=_non_negative_int, default=0, help="checkpoint every N steps (0: only the end)"
    )
    g.add_argument("--save-total-limit", type=_positive_int, help="keep only the newest N checkpoints")
    g.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="CHECKPOINT",
        help="continue from a checkpoint folder (no value: the newest one in --output-dir)",
    )
    g.add_argument("--log-every", type=_positive_int, default=1, help="log.jsonl record every N steps")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def check_args(args: argparse.Namespace, error: Callable[[str], Any]) -> None:
    """Cross-option checks; ``error`` (``parser.error``) reports the first problem."""
    if args.task == "jsonl":
        if not args.train_file:
            error("--task jsonl needs --train-file (or use --task synthetic)")
        for name in ("train_file", "eval_file"):
            path = getattr(args, name)
            if path and not os.path.isfile(path):
                error(f"--{name.replace('_', '-')} {path}: no such file")
        if not args.tokenizer and not args.model:
            error(
                "JSON lines data needs a tokenizer: pass --tokenizer PATH (a folder with vocab.json + "
                "merges.txt or tokenizer.json) when training from --config"
            )
    else:
        for name in ("train_file", "eval_file", "tokenizer"):
            if getattr(args, name):
                error(
                    f"--{name.replace('_', '-')} does not apply to --task synthetic (it makes its own data)"
                )
    if args.model and not os.path.isdir(args.model):
        error(f"--model {args.model}: not a folder (expected a Hugging Face LED folder with config.json)")
    if args.config and args.config not in PRESETS and not os.path.isfile(args.config):
        error(f"--config {args.config!r}: neither a preset ({', '.join(PRESETS)}) nor a JSON file")
    if args.resume and args.resume != "latest" and not os.path.isdir(args.resume):
        error(f"--resume {args.resume}: no such checkpoint folder")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            error("--device cuda: no CUDA GPU is available here (use --device cpu or auto)")
    if args.lr is None:
        args.lr = 5e-5 if args.model else 1e-3
    if args.eval_batch_size is None:
        args.eval_batch_size = args.batch_size


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line (exits with status 2 and a message on a bad one)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(args, parser.error)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m led.train`` with ``argv``; returns the exit status."""
    from led.train.data import DataError
    from led.train.loop import train

    args = parse_args(argv)
    try:
        train(args)
    except (UsageError, DataError, OSError) as exc:  # OSError: a file or folder named by the options
        print(f"led.train: error: {exc}", file=sys.stderr)
        return 2
    return 0
