"""``LEDConfig``: Hugging Face's LED configuration (same fields, defaults, ``config.json``) plus our options.

The fields and defaults are those of ``transformers.LEDConfig`` (4.x and 5.x agree), which are
led-large-like (d_model 1024, 12+12 layers, window 512). Our own additions are

- ``attn_backend``: the ``led_kernels`` backend the encoder attention runs on (``"auto"`` by default);
- ``pad_to_window_size``: pad the encoder input to a multiple of the largest ``attention_window`` like
  Hugging Face does (off by default: the kernels need no padding, and real-token outputs are the
  same either way).

Both are written to ``config.json``; ``transformers`` keeps unknown keys as plain attributes and
ignores them. Any other key found in a ``config.json`` (``transformers_version``, legacy generation
parameters such as ``num_beams``, old BART flags, ...) is kept in :attr:`LEDConfig.extra` and written
back unchanged, so a read/write round trip loses nothing.

This module does not import ``transformers``.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from led_kernels._validation import as_int

BACKEND_NAMES = ("auto", "torch", "triton", "cuda", "cpu")

# Hugging Face's generic names for some LED fields (``LEDConfig.attribute_map``).
ATTRIBUTE_MAP = {
    "num_attention_heads": "encoder_attention_heads",
    "hidden_size": "d_model",
    "attention_probs_dropout_prob": "attention_dropout",
    "initializer_range": "init_std",
    "num_hidden_layers": "encoder_layers",
}

# Fields written to config.json, in the order of transformers' LEDConfig.
_LED_FIELDS = (
    "vocab_size",
    "max_encoder_position_embeddings",
    "max_decoder_position_embeddings",
    "encoder_layers",
    "encoder_ffn_dim",
    "encoder_attention_heads",
    "decoder_layers",
    "decoder_ffn_dim",
    "decoder_attention_heads",
    "encoder_layerdrop",
    "decoder_layerdrop",
    "use_cache",
    "is_encoder_decoder",
    "activation_function",
    "d_model",
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "init_std",
    "decoder_start_token_id",
    "classifier_dropout",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "attention_window",
    "tie_word_embeddings",
)

# Generic PretrainedConfig fields we act on; written only when they differ from the default.
_GENERIC_DEFAULTS: dict[str, Any] = {
    "output_attentions": False,
    "output_hidden_states": False,
    "return_dict": True,
    "problem_type": None,
}


def _windows(attention_window, layers: int) -> list[int]:
    """One window per encoder layer from an int or a sequence of ints."""
    if isinstance(attention_window, (list, tuple)):
        return [as_int(w, "attention_window") for w in attention_window]
    return [as_int(attention_window, "attention_window (an int, or a list of one int per layer)")] * layers


class LEDConfig:
    """Configuration of an LED (Longformer Encoder-Decoder) model, compatible with Hugging Face's.

    Args:
        vocab_size: vocabulary size (50265 for the public LED checkpoints).
        max_encoder_position_embeddings: learned encoder positions (16384 for led-*-16384).
        max_decoder_position_embeddings: learned decoder positions (1024).
        encoder_layers, decoder_layers: number of layers.
        encoder_ffn_dim, decoder_ffn_dim: feed-forward inner sizes.
        encoder_attention_heads, decoder_attention_heads: heads per attention.
        encoder_layerdrop, decoder_layerdrop: LayerDrop probabilities (training only).
        use_cache: return the decoder KV cache by default.
        is_encoder_decoder: always True for LED (kept for config.json compatibility).
        activation_function: FFN activation (``"gelu"`` is exact GELU, as in Hugging Face).
        d_model: hidden size.
        dropout, attention_dropout, activation_dropout: dropout probabilities. ``attention_dropout``
            applies to the decoder; the fused encoder attention has no dropout (see the package docs).
        init_std: standard deviation of the random initialisation.
        decoder_start_token_id, pad_token_id, bos_token_id, eos_token_id: special token ids.
        classifier_dropout: dropout of the sequence-classification head.
        attention_window: full window per encoder layer (an int is expanded to one value per layer);
            each must be even and positive, as in Hugging Face; the one-sided window is half of it.
        tie_word_embeddings: tie ``lm_head`` to the shared embedding.
        output_attentions, output_hidden_states, return_dict: forward defaults, as in Hugging Face.
        id2label, label2id, num_labels, problem_type: classification settings.
        architectures: class names written to config.json.
        attn_backend: ``led_kernels`` backend of the encoder attention: ``"auto"``, ``"torch"``,
            ``"triton"``, ``"cuda"`` or ``"cpu"``.
        pad_to_window_size: pad the encoder input to a multiple of ``max(attention_window)`` like
            Hugging Face (identical real-token outputs; only useful to reproduce HF's shapes).
        **extra: any other key; kept and written back to config.json.

    Example::

        >>> cfg = LEDConfig(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
        ...                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
        ...                 attention_window=1024)
        >>> cfg.attention_window[:2], cfg.hidden_size
        ([1024, 1024], 768)
    """

    model_type = "led"

    def __init__(
        self,
        vocab_size: int = 50265,
        max_encoder_position_embeddings: int = 16384,
        max_decoder_position_embeddings: int = 1024,
        encoder_layers: int = 12,
        encoder_ffn_dim: int = 4096,
        encoder_attention_heads: int = 16,
        decoder_layers: int = 12,
        decoder_ffn_dim: int = 4096,
        decoder_attention_heads: int = 16,
        encoder_layerdrop: float = 0.0,
        decoder_layerdrop: float = 0.0,
        use_cache: bool = True,
        is_encoder_decoder: bool = True,
        activation_function: str = "gelu",
        d_model: int = 1024,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        init_std: float = 0.02,
        decoder_start_token_id: int = 2,
        classifier_dropout: float = 0.0,
        pad_token_id: int | None = 1,
        bos_token_id: int | None = 0,
        eos_token_id: int | list[int] | None = 2,
        attention_window: int | list[int] = 512,
        tie_word_embeddings: bool = True,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        id2label: dict[int, str] | None = None,
        label2id: dict[str, int] | None = None,
        num_labels: int | None = None,
        problem_type: str | None = None,
        architectures: list[str] | None = None,
        attn_backend: str = "auto",
        pad_to_window_size: bool = False,
        **extra: Any,
    ) -> None:
        # Hugging Face's alias names win over the defaults when given (as in PretrainedConfig).
        aliases = {alias: extra.pop(alias) for alias in list(extra) if alias in ATTRIBUTE_MAP}
        self.vocab_size = vocab_size
        self.max_encoder_position_embeddings = max_encoder_position_embeddings
        self.max_decoder_position_embeddings = max_decoder_position_embeddings
        self.encoder_layers = encoder_layers
        self.encoder_ffn_dim = encoder_ffn_dim
        self.encoder_attention_heads = encoder_attention_heads
        self.decoder_layers = decoder_layers
        self.decoder_ffn_dim = decoder_ffn_dim
        self.decoder_attention_heads = decoder_attention_heads
        self.encoder_layerdrop = encoder_layerdrop
        self.decoder_layerdrop = decoder_layerdrop
        self.use_cache = use_cache
        self.is_encoder_decoder = is_encoder_decoder
        self.activation_function = activation_function
        self.d_model = d_model
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.init_std = init_std
        self.decoder_start_token_id = decoder_start_token_id
        self.classifier_dropout = classifier_dropout
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.tie_word_embeddings = tie_word_embeddings
        self.output_attentions = output_attentions
        self.output_hidden_states = output_hidden_states
        self.return_dict = return_dict
        self.problem_type = problem_type
        self.architectures = list(architectures) if architectures is not None else None
        for alias, value in aliases.items():
            setattr(self, ATTRIBUTE_MAP[alias], value)

        if id2label is not None:
            self.id2label = {int(k): v for k, v in id2label.items()}
        else:
            self.id2label = {i: f"LABEL_{i}" for i in range(2 if num_labels is None else num_labels)}
        if num_labels is not None and num_labels != len(self.id2label):
            self.num_labels = num_labels
        self.label2id = (
            {k: int(v) for k, v in label2id.items()}
            if label2id is not None
            else {v: k for k, v in self.id2label.items()}
        )

        if attn_backend not in BACKEND_NAMES:
            raise ValueError(f"attn_backend must be one of {BACKEND_NAMES}, got {attn_backend!r}")
        self.attn_backend = attn_backend
        self.pad_to_window_size = bool(pad_to_window_size)

        # transformers' LEDEncoder turns an int window into one value per layer (and saves the list).
        self.attention_window = _windows(attention_window, self.encoder_layers)
        self._check_windows()

        # 4.x wrote the dtype as torch_dtype, 5.x as dtype; both are only metadata here.
        self.extra: dict[str, Any] = dict(extra)
        self.extra.pop("model_type", None)
        for name in ("vocab_size", "d_model", "encoder_attention_heads", "decoder_attention_heads"):
            if as_int(getattr(self, name), name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if (
            self.pad_token_id is not None
            and not 0 <= as_int(self.pad_token_id, "pad_token_id") < self.vocab_size
        ):
            raise ValueError(
                f"pad_token_id must be in [0, vocab_size={self.vocab_size}), got {self.pad_token_id}"
            )
        if self.d_model % self.encoder_attention_heads or self.d_model % self.decoder_attention_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by encoder_attention_heads "
                f"({self.encoder_attention_heads}) and decoder_attention_heads "
                f"({self.decoder_attention_heads})"
            )

    def _check_windows(self) -> None:
        if len(self.attention_window) != self.encoder_layers:
            raise ValueError(
                f"attention_window has {len(self.attention_window)} values but there are "
                f"{self.encoder_layers} encoder layers; give one value per layer (or an int)"
            )
        for layer, window in enumerate(self.attention_window):
            if window <= 0 or window % 2:
                raise ValueError(
                    f"attention_window of layer {layer} must be even and positive (Hugging Face's rule), "
                    f"got {window}"
                )

    # ---- Hugging Face's alias attributes -------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        """Alias of ``d_model``."""
        return self.d_model

    @property
    def num_attention_heads(self) -> int:
        """Alias of ``encoder_attention_heads``."""
        return self.encoder_attention_heads

    @property
    def num_hidden_layers(self) -> int:
        """Alias of ``encoder_layers``."""
        return self.encoder_layers

    @property
    def attention_probs_dropout_prob(self) -> float:
        """Alias of ``attention_dropout``."""
        return self.attention_dropout

    @property
    def initializer_range(self) -> float:
        """Alias of ``init_std``."""
        return self.init_std

    @property
    def num_labels(self) -> int:
        """Number of classification labels (``len(id2label)``)."""
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, value: int) -> None:
        if len(self.id2label) != value:
            self.id2label = {i: f"LABEL_{i}" for i in range(value)}
            self.label2id = {v: k for k, v in self.id2label.items()}

    def __getattr__(self, name: str) -> Any:
        # unknown config.json keys read like attributes, as in transformers
        extra = self.__dict__.get("extra")
        if extra is not None and name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    # ---- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` content: Hugging Face's keys, our two options, and every kept extra key."""
        out: dict[str, Any] = dict(copy.deepcopy(self.extra))
        out["model_type"] = self.model_type
        if self.architectures is not None:
            out["architectures"] = list(self.architectures)
        for name in _LED_FIELDS:
            out[name] = copy.deepcopy(getattr(self, name))
        for name, default in _GENERIC_DEFAULTS.items():
            if getattr(self, name) != default:
                out[name] = getattr(self, name)
        default_labels = {i: f"LABEL_{i}" for i in range(2)}
        if self.id2label != default_labels:
            out["id2label"] = {str(k): v for k, v in self.id2label.items()}
            out["label2id"] = dict(self.label2id)
        out["attn_backend"] = self.attn_backend
        out["pad_to_window_size"] = self.pad_to_window_size
        return dict(sorted(out.items()))

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **overrides: Any) -> LEDConfig:
        """Build from a ``config.json`` dictionary; ``overrides`` replace its values."""
        data = dict(config_dict)
        model_type = data.get("model_type", "led")
        if model_type != "led":
            raise ValueError(f"not an LED config: model_type is {model_type!r}")
        data.update(overrides)
        return cls(**data)

    def to_json_string(self) -> str:
        """The ``config.json`` text (sorted keys, 2-space indent, like transformers)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides: Any) -> LEDConfig:
        """Read a ``config.json`` file. A file that is not a JSON object, or whose fields the constructor
        refuses, is a ``ValueError``/``TypeError`` that names the file."""
        where = os.fspath(path)
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{where}: not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise TypeError(f"{where}: expected a JSON object of config fields, got {type(data).__name__}")
        try:
            return cls.from_dict(data, **overrides)
        except (TypeError, ValueError) as err:
            given = f" (or the overrides {', '.join(overrides)})" if overrides else ""
            err.args = (f"{where}{given}: {err}", *err.args[1:])
            raise

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: Any) -> LEDConfig:
        """Read ``config.json`` from a Hugging Face model folder (or a path to the file itself)."""
        path = os.fspath(path)
        file = os.path.join(path, "config.json") if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise FileNotFoundError(f"no config.json at {path!r}")
        return cls.from_json_file(file, **overrides)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``config.json`` into the folder ``path`` (created if needed)."""
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    def copy(self) -> LEDConfig:
        """A deep copy."""
        return copy.deepcopy(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LEDConfig) and self.to_dict() == other.to_dict()

    __hash__ = None  # mutable
