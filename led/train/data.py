"""Training data: JSON lines documents, batching (padding, global attention) and resumable sharding.

- :func:`read_jsonl` reads ``{"document": ..., "summary": ...}`` records and says which line and
  which field is wrong when one is;
- :class:`TokenizedDataset` tokenizes them once with :class:`led.LEDTokenizer` (truncating to the
  maximum source / target lengths);
- :class:`Seq2SeqCollator` pads a batch to its longest source (not to the maximum length), builds the
  attention and global attention masks, and pads the labels with -100;
- :class:`ResumableSampler` wraps :class:`torch.utils.data.distributed.DistributedSampler` (the
  per-rank shard of a per-epoch permutation of the dataset) and can skip the batches a resumed run
  has already trained on, so a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler


class DataError(ValueError):
    """A data file is missing or malformed (the message names the file, line and field)."""


def read_jsonl(
    path: str | os.PathLike, document_field: str = "document", summary_field: str = "summary"
) -> list[tuple[str, str]]:
    """``(document, summary)`` pairs from a JSON lines file; blank lines are skipped.

    Raises:
        DataError: the file does not exist, a line is not a JSON object, a field is missing or is
            not a string, or there is no record at all.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    pairs: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            fields = []
            for name in (document_field, summary_field):
                if name not in record:
                    raise DataError(
                        f"{path}:{lineno}: missing field {name!r} (the record has {sorted(record)})"
                    )
                if not isinstance(record[name], str):
                    raise DataError(
                        f"{path}:{lineno}: field {name!r} must be a string, got {type(record[name]).__name__}"
                    )
                fields.append(record[name])
            pairs.append((fields[0], fields[1]))
    if not pairs:
        raise DataError(f"{path}: no records")
    return pairs


class TokenizedDataset(Dataset):
    """``(document, summary)`` pairs tokenized once into ``{"input_ids", "labels"}`` lists.

    Sources are truncated to ``max_source_length`` and targets to ``max_target_length`` tokens
    (both keep their ``</s>``).
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, str]],
        tokenizer: Any,
        max_source_length: int,
        max_target_length: int,
    ) -> None:
        documents = [d for d, _ in pairs]
        summaries = [s for _, s in pairs]
        sources = tokenizer(documents, truncation=True, max_length=max_source_length)["input_ids"]
        targets = tokenizer(summaries, truncation=True, max_length=max_target_length)["input_ids"]
        self.examples = [{"input_ids": s, "labels": t} for s, t in zip(sources, targets, strict=True)]
        self.references = summaries

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.examples[index]

    def lengths(self) -> list[int]:
        """Source length of every example (for length-grouped batching)."""
        return [len(e["input_ids"]) for e in self.examples]


class Seq2SeqCollator:
    """Pads a list of ``{"input_ids", "labels"}`` into model inputs.

    Args:
        pad_token_id: id of ``<pad>`` in the source.
        global_tokens: number of leading tokens with global attention (1: ``<s>``, as for
            summarisation); padding positions never get it.
    """

    def __init__(self, pad_token_id: int, global_tokens: int = 1) -> None:
        self.pad_token_id = pad_token_id
        self.global_tokens = global_tokens

    def __call__(self, examples: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        b = len(examples)
        n = max(len(e["input_ids"]) for e in examples)
        t = max(len(e["labels"]) for e in examples)
        input_ids = torch.full((b, n), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(b, n, dtype=torch.long)
        labels = torch.full((b, t), -100, dtype=torch.long)
        for i, e in enumerate(examples):
            input_ids[i, : len(e["input_ids"])] = torch.tensor(e["input_ids"], dtype=torch.long)
            attention_mask[i, : len(e["input_ids"])] = 1
            labels[i, : len(e["labels"])] = torch.tensor(e["labels"], dtype=torch.long)
        global_attention_mask = torch.zeros_like(attention_mask)
        global_attention_mask[:, : self.global_tokens] = 1
        global_attention_mask *= attention_mask
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "global_attention_mask": global_attention_mask,
            "labels": labels,
        }


class ResumableSampler(Sampler[int]):
    """This rank's indices of an epoch (a ``DistributedSampler``), minus the first ``skip`` of them.

    ``set_epoch(epoch, skip)`` selects the epoch's permutation (seeded by ``seed + epoch``, the same
    on every rank) and how many of this rank's indices were already consumed before a resume.

    With ``lengths`` (one per example) and ``batch_size``, examples of similar length are batched
    together (like Hugging Face's ``group_by_length``): the rank's indices are cut into groups of
    ``group_batches`` batches, each group is sorted by length and cut into batches, and the batches
    of a group are shuffled. A batch is padded to its longest example, so on data of mixed lengths
    this spends far less compute on padding; the order is still a function of the seed and epoch.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int,
        rank: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        lengths: Sequence[int] | None = None,
        batch_size: int = 1,
        group_batches: int = 16,
    ) -> None:
        self.inner = DistributedSampler(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self.skip = 0
        self.lengths = lengths
        self.batch_size = batch_size
        self.group = batch_size * group_batches
        self.seed = seed

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch and the number of this rank's leading indices to leave out."""
        self.inner.set_epoch(epoch)
        self.skip = skip

    def _ordered(self) -> list[int]:
        indices = list(self.inner)
        if self.lengths is None:
            return indices
        rng = torch.Generator().manual_seed(self.seed + self.inner.epoch)
        ordered: list[int] = []
        for start in range(0, len(indices), self.group):
            group = sorted(indices[start : start + self.group], key=lambda i: -self.lengths[i])
            batches = [group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size)]
            for b in torch.randperm(len(batches), generator=rng).tolist():
                ordered += batches[b]
        return ordered

    def __iter__(self) -> Iterator[int]:
        return iter(self._ordered()[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)
