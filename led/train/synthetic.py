"""A synthetic long-range seq2seq task, generated in-process: keyed recall over a long document.

Why: to check that fine-tuning works end to end (and that an attention backend trains the model)
without downloading a corpus or a tokenizer, on a task whose target depends on tokens thousands of
positions apart.

A document is a long stream of filler tokens that hides a few facts::

    <s> w0 w0 ... k2 v12 w0 ... w0 k0 v3 w0 ... k1 v7 w0 ... </s>   ->   v3 v7 v12 </s>
                  '---------- facts at random far-apart positions ----------'

- ``num_facts`` facts ``k_i v_j`` (key token, then its value token) sit one per equal segment of the
  document, in a random key order and at random offsets, at least ``min_fact_gap`` tokens apart
  (more than the one-sided attention window, so the window around a fact holds no other fact); the
  keys are ``k_0 .. k_{F-1}``, each once, and the values are drawn uniformly from ``num_values``;
- the target is the facts' values **in key order** (the value of ``k_0``, of ``k_1``, ...), then
  ``</s>``.

So target position i needs the one fact with key ``k_i``, anywhere in the document, and the
binding of that fact's value to its key, which only the encoder's sliding window sees (the two
tokens are neighbours; nothing else in the window is a fact). The decoder then gathers the facts
from thousands of positions apart through cross-attention. Global attention stays on the first
token (``<s>``), the default for summarisation.

Values, keys and filler use disjoint ids, so the output format is easy to learn, but which value
belongs at each target position is not: a model that only learned the format (uniform over the
values) scores :meth:`format_floor_loss`; one that copies the document's values without knowing
which key each belongs to scores about :meth:`bag_of_values_loss`; only binding values to keys goes
lower.

Examples are a pure function of ``(seed, split, index)`` (each draws from its own
``random.Random``), so the data is deterministic, needs no storage, shards across DataLoader workers
and processes for free, and the ``"eval"`` split is a separate random stream (held out).

Document lengths: every document has ``max_length`` tokens when ``min_length`` is None; otherwise
training documents have lengths drawn log-uniformly from ``[min_length, max_length]``: short
documents are cheap, so a mix of lengths gives a small model many more examples in the same time.
Evaluation documents always have ``max_length`` tokens, so the held-out loss measures recall over
the full distance.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

import torch

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
BOS, PAD, EOS, UNK = range(len(SPECIAL_TOKENS))
_SPLITS = ("train", "eval")


@dataclass(frozen=True)
class SyntheticTask:
    """Keyed recall over long documents (see the module docs).

    Args:
        max_length: document length in tokens (``<s>`` and ``</s>`` included); every evaluation
            document has this length.
        min_length: shortest training document (lengths log-uniform in ``[min_length, max_length]``);
            None: all training documents have ``max_length`` tokens.
        num_facts: facts per document, F (the target has F values and ``</s>``).
        num_values: value vocabulary; each value is drawn uniformly.
        num_filler: filler vocabulary.
        min_fact_gap: least distance between two facts, and between ``<s>`` and the first fact;
            keep it above the one-sided attention window. Documents too short for it are an error.
        seed: the data seed.
    """

    max_length: int = 2048
    min_length: int | None = None
    num_facts: int = 4
    num_values: int = 16
    num_filler: int = 1
    min_fact_gap: int = 34
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_facts", "num_values", "num_filler"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.min_length is not None and self.min_length > self.max_length:
            raise ValueError(f"min_length ({self.min_length}) is larger than max_length ({self.max_length})")
        shortest = self.min_length if self.min_length is not None else self.max_length
        if shortest < self.shortest_document():
            raise ValueError(
                f"documents of {shortest} tokens cannot hold {self.num_facts} facts "
                f"{self.min_fact_gap} tokens apart; the shortest possible is {self.shortest_document()} "
                "(raise the length, or lower the number of facts or the attention window)"
            )

    # ---- vocabulary --------------------------------------------------------------------------------
    @property
    def key_offset(self) -> int:
        """Id of ``k0``."""
        return len(SPECIAL_TOKENS)

    @property
    def value_offset(self) -> int:
        """Id of ``v0``."""
        return self.key_offset + self.num_facts

    @property
    def filler_offset(self) -> int:
        """Id of ``w0``."""
        return self.value_offset + self.num_values

    @property
    def vocab_size(self) -> int:
        """Number of token ids the task uses."""
        return self.filler_offset + self.num_filler

    @property
    def target_length(self) -> int:
        """Target tokens per example (the values and ``</s>``)."""
        return self.num_facts + 1

    def shortest_document(self) -> int:
        """The shortest document that holds every fact with the required gaps."""
        return 3 + self.num_facts * max(self.min_fact_gap, 2)

    def token(self, token_id: int) -> str:
        """The readable name of an id (``k3``, ``v12``, ``w0``, ``</s>``)."""
        if 0 <= token_id < len(SPECIAL_TOKENS):
            return SPECIAL_TOKENS[token_id]
        for prefix, start, count in (
            ("k", self.key_offset, self.num_facts),
            ("v", self.value_offset, self.num_values),
            ("w", self.filler_offset, self.num_filler),
        ):
            if start <= token_id < start + count:
                return f"{prefix}{token_id - start}"
        return SPECIAL_TOKENS[UNK]

    def decode(self, ids: list[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Space-separated token names (for ROUGE and for reading examples)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        skipped = range(len(SPECIAL_TOKENS)) if skip_special_tokens else range(0)
        return " ".join(self.token(i) for i in ids if i not in skipped)

    # ---- reference losses ----------------------------------------------------------------------------
    def format_floor_loss(self) -> float:
        """Mean target loss (nats per token) of a model that knows the output format but no fact:
        uniform over the values, ``</s>`` certain."""
        return self.num_facts * math.log(self.num_values) / self.target_length

    def bag_of_values_loss(self) -> float:
        """About the mean target loss of a model that knows which values the document holds but not
        which key each belongs to (uniform over the document's distinct values)."""
        f, v = self.num_facts, self.num_values
        distinct = v * (1 - (1 - 1 / v) ** f)  # expected number of distinct values among the F drawn
        return f * math.log(distinct) / self.target_length

    # ---- examples --------------------------------------------------------------------------------------
    def _rng_and_length(self, index: int, split: str) -> tuple[random.Random, int]:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        # a str seed is hashed with sha512: the same stream on every platform and Python run
        rng = random.Random(f"led.train.synthetic/{self.seed}/{split}/{index}")
        length = self.max_length
        if split == "train" and self.min_length is not None and self.min_length < self.max_length:
            log_length = rng.uniform(math.log(self.min_length), math.log(self.max_length + 1))
            length = min(self.max_length, int(math.exp(log_length)))
        return rng, length

    def length(self, index: int, split: str = "train") -> int:
        """Source length of an example, without generating it."""
        return self._rng_and_length(index, split)[1]

    def example(self, index: int, split: str = "train") -> tuple[list[int], list[int]]:
        """``(source ids, target ids)`` of example ``index`` of ``split`` (``"train"`` or ``"eval"``)."""
        rng, length = self._rng_and_length(index, split)

        f = self.num_facts
        source = [self.filler_offset + rng.randrange(self.num_filler) for _ in range(length)]
        source[0], source[-1] = BOS, EOS
        values = [rng.randrange(self.num_values) for _ in range(f)]

        # fact s goes in segment s (segments in a random key order), after at least min_fact_gap
        # tokens from the previous fact (or <s>); the spare tokens are spread at random
        gap = max(self.min_fact_gap, 2)
        spare = length - 3 - f * gap
        offsets = sorted(rng.randrange(spare + 1) for _ in range(f))
        order = rng.sample(range(f), f)
        for s, key in enumerate(order):
            position = (s + 1) * gap + offsets[s]
            source[position] = self.key_offset + key
            source[position + 1] = self.value_offset + values[key]
        target = [self.value_offset + value for value in values] + [EOS]
        return source, target

    def to_dict(self) -> dict:
        """The task's parameters (written to the run's ``run.json``)."""
        return asdict(self)


class SyntheticDataset(torch.utils.data.Dataset):
    """``size`` examples of one split of a :class:`SyntheticTask`, as ``{"input_ids", "labels"}``
    lists (collated by :class:`led.train.data.Seq2SeqCollator`)."""

    def __init__(self, task: SyntheticTask, split: str, size: int) -> None:
        if size < 1:
            raise ValueError(f"the synthetic {split} split needs at least one example, got size {size}")
        self.task, self.split, self.size = task, split, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        source, target = self.task.example(index, self.split)
        return {"input_ids": source, "labels": target}

    def lengths(self) -> list[int]:
        """Source length of every example (for length-grouped batching)."""
        return [self.task.length(i, self.split) for i in range(self.size)]
