"""Training checkpoints that resume exactly.

A checkpoint is the folder ``<output-dir>/checkpoint-<step>``:

- the model as a Hugging Face LED folder (``save_pretrained``: ``config.json``,
  ``model.safetensors``, ``generation_config.json``) and, for text data, the tokenizer files, so
  the folder loads in ``transformers`` and in :mod:`led` as it is;
- ``optimizer.pt`` and ``scheduler.pt`` (state dicts);
- ``rng_state_<rank>.pt``: every rank's Python and torch (CPU and CUDA) random states, gathered to
  rank 0, so dropout continues with the same random streams;
- ``trainer_state.json``: the optimizer step, the epoch and how many of this epoch's batches were
  consumed (the data order is a function of the seed and the epoch, so skipping those batches puts
  the sampler where it was), and the arguments of the run.

Only rank 0 writes. The folder is written under a temporary name and renamed when complete, so a
run killed while saving never leaves a half checkpoint that ``--resume`` would pick up.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from typing import Any

import torch

TRAINER_STATE = "trainer_state.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def rng_state() -> dict[str, Any]:
    """This process's random states (Python, torch CPU, and CUDA when initialised)."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(output_dir: str, step: int) -> str:
    """``<output_dir>/checkpoint-<step>``."""
    return os.path.join(output_dir, f"checkpoint-{step}")


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints in ``output_dir`` as ``(step, path)``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isfile(os.path.join(path, TRAINER_STATE)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def save(
    path: str,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng_states: list[dict[str, Any]],
    trainer_state: dict[str, Any],
    tokenizer: Any | None = None,
) -> None:
    """Write a checkpoint folder (call on rank 0 only; ``rng_states`` holds every rank's)."""
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
    torch.save(scheduler.state_dict(), os.path.join(tmp, "scheduler.pt"))
    for rank, state in enumerate(rng_states):
        torch.save(state, os.path.join(tmp, f"rng_state_{rank}.pt"))
    with open(os.path.join(tmp, TRAINER_STATE), "w", encoding="utf-8") as f:
        json.dump(trainer_state, f, indent=2, sort_keys=True)
        f.write("\n")
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def load_trainer_state(path: str) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint folder."""
    file = os.path.join(path, TRAINER_STATE)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{path} is not a training checkpoint (no {TRAINER_STATE})")
    with open(file, encoding="utf-8") as f:
        return json.load(f)


def load_training_state(
    path: str,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rank: int,
    world_size: int,
) -> None:
    """Restore the optimizer, the scheduler and this rank's random state from a checkpoint folder."""
    saved_world = load_trainer_state(path).get("world_size", 1)
    if saved_world != world_size:
        raise ValueError(
            f"{path} was written by a run with {saved_world} processes; resume it with the same number "
            f"(this run has {world_size}) so that the data shards and random streams line up"
        )
    optimizer.load_state_dict(torch.load(os.path.join(path, "optimizer.pt"), weights_only=True))
    scheduler.load_state_dict(torch.load(os.path.join(path, "scheduler.pt"), weights_only=True))
    set_rng_state(torch.load(os.path.join(path, f"rng_state_{rank}.pt"), weights_only=True))


def prune(output_dir: str, keep: int | None) -> None:
    """Delete all but the ``keep`` newest checkpoints (``None``: keep all)."""
    if keep is None:
        return
    found = list_checkpoints(output_dir)
    for _, path in found[: max(0, len(found) - keep)]:
        shutil.rmtree(path, ignore_errors=True)
