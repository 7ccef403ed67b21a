"""Reading and writing Hugging Face LED folders.

A folder holds ``config.json``, the weights as ``model.safetensors`` or ``pytorch_model.bin`` (or
their sharded ``*.index.json`` forms), and for generation models optionally
``generation_config.json``. State-dict keys are Hugging Face's:

- head models keep the base model under ``led.`` (``led.encoder.layers.0...``); a bare ``LEDModel``
  has no prefix. Checkpoints of either kind load into either kind of model.
- ``led.shared.weight``, ``led.encoder.embed_tokens.weight``, ``led.decoder.embed_tokens.weight``
  and (when ``tie_word_embeddings``) ``lm_head.weight`` are one tensor: any one of them in a
  checkpoint fills the others, and saving keeps only ``shared`` (as ``transformers`` does).
- ``final_logits_bias`` is a saved buffer; a checkpoint without it loads with zeros.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import torch
from torch import nn

from led.configuration import LEDConfig

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
GENERATION_CONFIG = "generation_config.json"
PREFIX = "led."

# generation parameters that may sit in a legacy (4.x) config.json, and their meaning here
GENERATION_KEYS = (
    "max_length",
    "max_new_tokens",
    "min_length",
    "min_new_tokens",
    "num_beams",
    "length_penalty",
    "no_repeat_ngram_size",
    "early_stopping",
    "num_return_sequences",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "do_sample",
)
SPECIAL_TOKEN_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def _load_file(file: str) -> dict[str, torch.Tensor]:
    if file.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(file)
    # weights_only: a checkpoint is data, never code
    return torch.load(file, map_location="cpu", weights_only=True)


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a folder's weights (safetensors preferred), shards merged.

    Raises:
        FileNotFoundError: the folder has none of the known weight files.
    """
    path = os.fspath(path)
    for index_name in (SAFE_INDEX, TORCH_INDEX):
        index_file = os.path.join(path, index_name)
        if os.path.isfile(index_file):
            with open(index_file, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_load_file(os.path.join(path, shard)))
            return state
    for name in (SAFE_WEIGHTS, TORCH_WEIGHTS):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            return _load_file(file)
    raise FileNotFoundError(
        f"no weights in {path!r}: expected {SAFE_WEIGHTS}, {TORCH_WEIGHTS} "
        f"or a sharded index ({SAFE_INDEX}, {TORCH_INDEX})"
    )


def embedding_keys(model: nn.Module) -> list[str]:
    """The state-dict keys of the token embeddings in ``model``: ``shared``, then the encoder's and
    the decoder's ``embed_tokens``, then ``lm_head`` when the model has one."""
    base = PREFIX if hasattr(model, "led") else ""
    keys = [
        f"{base}shared.weight",
        f"{base}encoder.embed_tokens.weight",
        f"{base}decoder.embed_tokens.weight",
    ]
    if hasattr(model, "lm_head"):
        keys.append("lm_head.weight")
    return keys


def tied_keys(model: nn.Module) -> list[str]:
    """The state-dict keys that name the one shared embedding (``shared`` first); none are tied
    when ``config.tie_word_embeddings`` is False (transformers 5's rule)."""
    return embedding_keys(model) if model.config.tie_word_embeddings else []


def adapt_state_dict(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face state dict for ``model``: add or strip ``led.``, fill the tied keys."""
    model_prefixed = hasattr(model, "led")
    ckpt_prefixed = any(k.startswith(PREFIX) for k in state_dict)
    base_roots = ("shared.", "encoder.", "decoder.")
    if model_prefixed and not ckpt_prefixed:  # an LEDModel checkpoint under a head
        state_dict = {(PREFIX + k if k.startswith(base_roots) else k): v for k, v in state_dict.items()}
    elif not model_prefixed and ckpt_prefixed:  # a head checkpoint into LEDModel: keep the base model only
        state_dict = {k[len(PREFIX) :]: v for k, v in state_dict.items() if k.startswith(PREFIX)}
    else:
        state_dict = dict(state_dict)
    keys = tied_keys(model)
    source = next((state_dict[k] for k in keys if k in state_dict), None)
    if source is not None:
        for k in keys:  # one tensor: the first present (``shared``) wins, as in transformers
            state_dict[k] = source
    shared = embedding_keys(model)[0]
    if not keys and shared in state_dict:
        # untied: 4.x saved only `shared` for the encoder/decoder embeddings (they were one module there)
        for k in embedding_keys(model)[1:3]:
            state_dict.setdefault(k, state_dict[shared])
    return state_dict


def load_into(model: nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = False) -> None:
    """Copy a Hugging Face state dict into ``model``; warn (or raise when ``strict``) about leftovers.

    A missing ``final_logits_bias`` is not reported (it is zero, as in Hugging Face). Shape
    mismatches always raise.
    """
    adapted = adapt_state_dict(state_dict, model)
    missing, unexpected = model.load_state_dict(adapted, strict=False)
    missing = [k for k in missing if k != "final_logits_bias"]
    # the LM head of a seq2seq checkpoint is expected to be dropped by the QA/classification models
    unexpected = [k for k in unexpected if k not in ("final_logits_bias", "lm_head.weight")]
    problems = []
    if missing:
        problems.append(f"not in the checkpoint (left at their random initialisation): {missing}")
    if unexpected:
        problems.append(f"in the checkpoint but not in {type(model).__name__} (ignored): {unexpected}")
    if problems:
        message = f"loading {type(model).__name__}: " + "; ".join(problems)
        if strict:
            raise RuntimeError(message)
        warnings.warn(message, stacklevel=3)
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def state_dict_to_save(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict without the tied copies (only ``shared`` is kept), contiguous."""
    state = model.state_dict()
    for k in tied_keys(model)[1:]:
        state.pop(k, None)
    return {k: v.detach().contiguous() for k, v in state.items()}


def load_generation_config(path: str | os.PathLike, config: LEDConfig) -> dict[str, Any]:
    """Generation defaults of a folder: ``generation_config.json`` if present, else the legacy
    generation keys of ``config.json``; always with the config's special token ids as fallbacks."""
    generation = {k: getattr(config, k) for k in SPECIAL_TOKEN_KEYS}
    file = os.path.join(os.fspath(path), GENERATION_CONFIG)
    if os.path.isfile(file):
        with open(file, encoding="utf-8") as f:
            generation.update(json.load(f))
    else:
        generation.update({k: config.extra[k] for k in GENERATION_KEYS if k in config.extra})
    return generation


def save_folder(model: nn.Module, path: str | os.PathLike, safe_serialization: bool = True) -> None:
    """Write ``config.json``, the weights and (for generation models) ``generation_config.json``."""
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    config: LEDConfig = model.config.copy()
    config.architectures = [type(model).__name__]
    # the weights' dtype, under 5.x's and 4.x's names (a stale value read from another folder is replaced)
    dtype = str(next(p.dtype for p in model.parameters() if p.is_floating_point())).removeprefix("torch.")
    config.extra.update(dtype=dtype, torch_dtype=dtype)
    config.save_pretrained(path)
    state = state_dict_to_save(model)
    for stale in (SAFE_WEIGHTS, TORCH_WEIGHTS, SAFE_INDEX, TORCH_INDEX):
        if os.path.exists(os.path.join(path, stale)):  # never leave two different weight files behind
            os.remove(os.path.join(path, stale))
    if safe_serialization:
        from safetensors.torch import save_file

        save_file(state, os.path.join(path, SAFE_WEIGHTS), metadata={"format": "pt"})
    else:
        torch.save(state, os.path.join(path, TORCH_WEIGHTS))
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        with open(os.path.join(path, GENERATION_CONFIG), "w", encoding="utf-8") as f:
            json.dump(generation, f, indent=2, sort_keys=True)
            f.write("\n")
