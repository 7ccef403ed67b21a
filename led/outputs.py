"""Output dataclasses with Hugging Face's names and fields (``LEDSeq2SeqLMOutput``, ...).

Like ``transformers.utils.ModelOutput`` they can be read as attributes (``out.logits``), by key
(``out["logits"]``) or by position over the fields that are not ``None`` (``out[0]``,
``out.to_tuple()``), so code written against Hugging Face's outputs works unchanged.

``past_key_values`` is the legacy (transformers 4.x) tuple format: one tuple per decoder layer of
``(self_key, self_value, cross_key, cross_value)``, each ``(batch, heads, length, head_dim)``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

Tensors = tuple[torch.Tensor, ...]
PastKeyValues = tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], ...]


@dataclass
class ModelOutput:
    """Base of every output: attribute, key and position access over the non-``None`` fields."""

    def to_tuple(self) -> tuple[Any, ...]:
        """The non-``None`` fields in declaration order (what ``return_dict=False`` returns)."""
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def keys(self) -> list[str]:
        """Names of the non-``None`` fields."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list[Any]:
        """Values of the non-``None`` fields."""
        return list(self.to_tuple())

    def items(self) -> list[tuple[str, Any]]:
        """(name, value) of the non-``None`` fields."""
        return [(k, getattr(self, k)) for k in self.keys()]

    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]`` or ``default`` when the field is missing or ``None``."""
        value = getattr(self, key, None)
        return default if value is None else value

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


@dataclass
class LEDEncoderBaseModelOutput(ModelOutput):
    """Encoder output.

    ``attentions`` (when asked): per layer ``(batch, heads, seq_len, G + attention_window + 1)``, the
    first ``G`` columns the weights to the global tokens (G = the batch's largest global count), the
    rest the weights to relative positions ``-w..w``; 0 for global, padded and out-of-range keys,
    and for the rows of global and padding tokens (exactly Hugging Face's layout).
    ``global_attentions`` (when asked and there are global tokens): per layer
    ``(batch, heads, seq_len, G)``, the weights of each global token over all keys.
    """

    last_hidden_state: torch.Tensor | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
    global_attentions: Tensors | None = None


def encoder_output(encoder_outputs: Any, d_model: int) -> LEDEncoderBaseModelOutput:
    """``encoder_outputs`` as given to ``forward``/``generate`` (the output object or Hugging Face's tuple),
    checked to start with the last hidden state (B, N, d_model): an empty tuple would otherwise run the
    decoder without cross-attention."""
    if not isinstance(encoder_outputs, LEDEncoderBaseModelOutput):
        encoder_outputs = LEDEncoderBaseModelOutput(*tuple(encoder_outputs)[:4])
    memory = encoder_outputs.last_hidden_state
    if not isinstance(memory, torch.Tensor) or memory.dim() != 3 or memory.shape[-1] != d_model:
        got = tuple(memory.shape) if isinstance(memory, torch.Tensor) else type(memory).__name__
        raise ValueError(
            f"encoder_outputs must start with the encoder's last hidden state (B, N, d_model={d_model}), "
            f"got {got}"
        )
    return encoder_outputs


@dataclass
class LEDDecoderOutput(ModelOutput):
    """Decoder output (Hugging Face's ``BaseModelOutputWithPastAndCrossAttentions``)."""

    last_hidden_state: torch.Tensor | None = None
    past_key_values: PastKeyValues | None = None
    hidden_states: Tensors | None = None
    attentions: Tensors | None = None
    cross_attentions: Tensors | None = None


@dataclass
class LEDSeq2SeqModelOutput(ModelOutput):
    """``LEDModel`` output: decoder states plus the encoder's."""

    last_hidden_state: torch.Tensor | None = None
    past_key_values: PastKeyValues | None = None
    decoder_hidden_states: Tensors | None = None
    decoder_attentions: Tensors | None = None
    cross_attentions: Tensors | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    encoder_hidden_states: Tensors | None = None
    encoder_attentions: Tensors | None = None
    encoder_global_attentions: Tensors | None = None


@dataclass
class LEDSeq2SeqLMOutput(ModelOutput):
    """``LEDForConditionalGeneration`` output."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: PastKeyValues | None = None
    decoder_hidden_states: Tensors | None = None
    decoder_attentions: Tensors | None = None
    cross_attentions: Tensors | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    encoder_hidden_states: Tensors | None = None
    encoder_attentions: Tensors | None = None
    encoder_global_attentions: Tensors | None = None


@dataclass
class LEDSeq2SeqSequenceClassifierOutput(ModelOutput):
    """``LEDForSequenceClassification`` output."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: PastKeyValues | None = None
    decoder_hidden_states: Tensors | None = None
    decoder_attentions: Tensors | None = None
    cross_attentions: Tensors | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    encoder_hidden_states: Tensors | None = None
    encoder_attentions: Tensors | None = None
    encoder_global_attentions: Tensors | None = None


@dataclass
class LEDSeq2SeqQuestionAnsweringModelOutput(ModelOutput):
    """``LEDForQuestionAnswering`` output."""

    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    past_key_values: PastKeyValues | None = None
    decoder_hidden_states: Tensors | None = None
    decoder_attentions: Tensors | None = None
    cross_attentions: Tensors | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    encoder_hidden_states: Tensors | None = None
    encoder_attentions: Tensors | None = None
    encoder_global_attentions: Tensors | None = None


@dataclass
class LEDGenerateOutput(ModelOutput):
    """``generate(..., return_dict_in_generate=True)`` output.

    ``sequences_scores`` is set by beam search: each returned hypothesis' summed log-probability
    divided by ``length ** length_penalty`` (Hugging Face's ``sequences_scores``).
    """

    sequences: torch.Tensor | None = None
    sequences_scores: torch.Tensor | None = None
    encoder_outputs: LEDEncoderBaseModelOutput | None = None
