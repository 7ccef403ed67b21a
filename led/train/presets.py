"""Named model shapes for training from a random initialisation (``--config NAME``).

- ``tiny``: a few thousand parameters per layer, for tests and smoke runs (seconds on a CPU);
- ``small``: the CPU example (``python -m led.train --task synthetic --config small``), a model
  that learns the synthetic recall task in a few minutes on two CPU cores;
- ``base`` / ``large``: the shapes of ``allenai/led-base-16384`` / ``led-large-16384``.

The two small shapes use ``init_std=0.1`` rather than Hugging Face's 0.02: with d_model 32-64 and
std 0.02 every attention is almost uniform and the token embeddings are tiny next to the
LayerNorm's unit scale, a slow place for so small a model to start from. The larger shapes
keep 0.02.
``small`` also has no dropout: the synthetic task never repeats an example, so there is no
overfitting to guard against (``--dropout`` sets it). Its decoder is deeper than its encoder (6
layers against 2): with short targets a decoder layer costs almost nothing next to an encoder layer
over thousands of tokens, and the decoder's cross-attention is where the far-apart facts are
gathered.

The vocabulary and the numbers of positions are not part of a preset: they come from the data
(the tokenizer or the synthetic task) and from ``--max-source-length`` / ``--max-target-length``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from led.configuration import LEDConfig

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        attention_window=16,
        init_std=0.1,
    ),
    "small": dict(
        d_model=64,
        encoder_layers=2,
        decoder_layers=6,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        attention_window=64,
        init_std=0.1,
        dropout=0.0,
    ),
    "base": dict(
        d_model=768,
        encoder_layers=6,
        decoder_layers=6,
        encoder_attention_heads=12,
        decoder_attention_heads=12,
        encoder_ffn_dim=3072,
        decoder_ffn_dim=3072,
        attention_window=1024,
    ),
    "large": dict(
        d_model=1024,
        encoder_layers=12,
        decoder_layers=12,
        encoder_attention_heads=16,
        decoder_attention_heads=16,
        encoder_ffn_dim=4096,
        decoder_ffn_dim=4096,
        attention_window=1024,
    ),
}


def load_config_fields(name_or_path: str) -> dict[str, Any]:
    """The config fields of a preset name or of a JSON file (a ``config.json`` or a dict of fields)."""
    if name_or_path in PRESETS:
        return dict(PRESETS[name_or_path])
    if not os.path.isfile(name_or_path):
        raise ValueError(
            f"--config {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) nor an existing JSON file"
        )
    try:
        with open(name_or_path, encoding="utf-8") as f:
            fields = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config {name_or_path}: not valid JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise ValueError(f"--config {name_or_path}: expected a JSON object of LEDConfig fields")
    return fields


def build_config(
    name_or_path: str,
    *,
    vocab_size: int,
    max_source_length: int,
    max_target_length: int,
    pad_token_id: int,
    bos_token_id: int,
    eos_token_id: int,
    **overrides: Any,
) -> LEDConfig:
    """An :class:`LEDConfig` for a random initialisation: the preset's (or file's) shape, with the
    vocabulary, special ids and position counts the data needs. ``overrides`` win over everything."""
    fields = load_config_fields(name_or_path)
    fields.pop("model_type", None)
    fields.update(
        vocab_size=vocab_size,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        decoder_start_token_id=eos_token_id,  # LED starts decoding with </s>
    )
    # positions: at least what the data needs (a file may ask for more)
    fields["max_encoder_position_embeddings"] = max(
        int(fields.get("max_encoder_position_embeddings", 0)), max_source_length
    )
    fields["max_decoder_position_embeddings"] = max(
        int(fields.get("max_decoder_position_embeddings", 0)), max_target_length
    )
    fields.update(overrides)
    return LEDConfig(**fields)
