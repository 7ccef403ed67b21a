"""What a run reports: the JSON lines log, the progress bar, peak memory and ROUGE.

Only rank 0 reports; the other ranks get inert objects, so the loop has no rank tests of its own
around every print.

- :class:`RunLog` appends one JSON object per line to ``<output-dir>/log.jsonl``: training records
  (``step``, ``loss``, ``lr``, ``grad_norm``, ``tokens_per_s``, ``peak_mem_mb``, ...) and evaluation
  records (``step``, ``eval_loss``, ``eval_token_accuracy``, ROUGE when computed). On resume the
  records after the checkpoint's step (written by the interrupted run) are dropped first, so the log
  reads like the one of an uninterrupted run.
- :func:`peak_memory_mb`: ``torch.cuda.max_memory_allocated`` on a GPU, the process's peak resident
  set size on the CPU.
- :func:`rouge`: ROUGE-1/2/L F-measures when the ``rouge_score`` package is installed, else None.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from collections.abc import Sequence
from typing import Any

import torch

LOG_FILE = "log.jsonl"
ROUGE_NAMES = ("rouge1", "rouge2", "rougeL")


class RunLog:
    """The JSON lines log of a run (rank 0) and its console output."""

    def __init__(
        self, output_dir: str | None, enabled: bool, progress: bool, total_steps: int, initial_step: int = 0
    ) -> None:
        self.enabled = enabled
        self.path = os.path.join(output_dir, LOG_FILE) if output_dir and enabled else None
        self.bar = None
        if enabled and progress:
            from tqdm.auto import tqdm

            # not a terminal (a CI log, a file): fewer, longer-spaced updates
            interactive = sys.stderr.isatty()
            self.bar = tqdm(
                total=total_steps,
                initial=initial_step,
                desc="train",
                unit="step",
                dynamic_ncols=True,
                mininterval=0.2 if interactive else 10.0,
                file=sys.stderr,
            )

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (left by an interrupted run that is being resumed;
        ``-1`` drops them all)."""
        if not self.path or not os.path.isfile(self.path):
            return
        with open(self.path, encoding="utf-8") as f:
            records = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(records)

    def record(self, values: dict[str, Any]) -> None:
        """Append one record to the log file."""
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(values, sort_keys=False) + "\n")

    def print(self, text: str) -> None:
        """A console line that does not break the progress bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def progress(self, step: int, postfix: dict[str, str]) -> None:
        """Move the bar to ``step`` with these values shown."""
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(step - self.bar.n)

    def close(self) -> None:
        """Close the progress bar."""
        if self.bar is not None:
            self.bar.close()


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA ``max_memory_allocated`` on a GPU, peak RSS of the process on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux, in bytes on macOS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def rouge_available() -> bool:
    """Whether ``rouge_score`` can be imported."""
    try:
        import rouge_score  # noqa: F401
    except ImportError:
        return False
    return True


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float] | None:
    """Sums of ROUGE-1/2/L F-measures (x100) over the pairs, or None without ``rouge_score``.

    Sums, not means, so that the shards of several ranks can be added before dividing.
    """
    if not rouge_available():
        return None
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_NAMES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_NAMES, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(reference, prediction)
        for name in totals:
            totals[name] += 100.0 * scores[name].fmeasure
    return totals
