"""``LEDTokenizer``: the LED / BART byte-level BPE tokenizer on the ``tokenizers`` library.

It reads the files of a Hugging Face LED checkpoint (``vocab.json`` + ``merges.txt``, or ``tokenizer.json``,
plus ``tokenizer_config.json`` / ``special_tokens_map.json`` when present) and produces the same ids, masks,
padding and truncation as ``transformers.LEDTokenizerFast`` (which in ``transformers`` 5 is an alias of
``RobertaTokenizer``) on the same files, without importing ``transformers``:

- pre-tokenizer ``ByteLevel(add_prefix_space=add_prefix_space)`` (default ``False``), decoder ``ByteLevel``;
- post-processor ``RobertaProcessing``: ``<s> A </s>`` for one sequence, ``<s> A </s></s> B </s>`` for a pair;
- special tokens ``<s>`` (bos/cls), ``<pad>``, ``</s>`` (eos/sep), ``<unk>``, ``<mask>``: their ids come
  from the vocabulary (``0, 1, 2, 3`` and the last id in the LED vocabulary); tokens missing from it are
  appended, in the same order as ``transformers`` appends them.

As in ``transformers`` 5, a ``tokenizer.json`` contributes its vocabulary, merges and added tokens; its
pre-tokenizer, post-processor, padding and truncation settings are not used (the pipeline above is rebuilt,
with ``add_prefix_space`` / ``trim_offsets`` read from ``tokenizer_config.json`` or passed to
``from_pretrained``).

LED specifics: pad to a multiple of the attention window (``pad_to_multiple_of=1024`` for
``allenai/led-base-16384``), and give the encoder a ``global_attention_mask``
(:meth:`LEDTokenizer.build_global_attention_mask`, or ``global_attention=...`` in ``__call__``).
:meth:`LEDTokenizer.pad` pads a ``global_attention_mask`` it is given with ``0`` (local attention; the padded
positions have ``attention_mask`` 0 anyway). ``transformers`` 4 padded it with ``-1`` and ``transformers`` 5
no longer pads it at all.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tokenizers import AddedToken, Encoding, Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE

__all__ = ["BatchEncoding", "LEDTokenizer"]

logger = logging.getLogger(__name__)

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"

#: ``model_max_length`` of a tokenizer without a length limit (``transformers``' value).
VERY_LARGE_INTEGER = int(1e30)
_LARGE_INTEGER = int(1e20)

#: Named special tokens, in the order ``transformers`` adds missing ones to the vocabulary.
SPECIAL_TOKENS_ATTRIBUTES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)

_DEFAULT_SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "cls_token": "<s>",
    "mask_token": "<mask>",
}

_PADDING = {"longest": "longest", "max_length": "max_length", "do_not_pad": "do_not_pad"}
_TRUNCATION = ("longest_first", "only_first", "only_second", "do_not_truncate")
_MODEL_INPUT_NAMES = ("input_ids", "attention_mask")


# --------------------------------------------------------------------------------------------- helpers
def _to_added_token(value: str | AddedToken | Mapping[str, Any], special: bool = True) -> AddedToken:
    """A ``tokenizers.AddedToken`` from a string, an ``AddedToken`` or its JSON form (tokenizer_config)."""
    if isinstance(value, AddedToken):
        return value
    if isinstance(value, str):
        return AddedToken(value, special=special, normalized=not special)
    fields = {k: v for k, v in value.items() if k not in ("__type", "id")}
    content = fields.pop("content")
    fields.setdefault("special", special)
    return AddedToken(content, **fields)


def _added_token_to_json(token: AddedToken) -> dict[str, Any]:
    return {
        "content": token.content,
        "lstrip": token.lstrip,
        "normalized": token.normalized,
        "rstrip": token.rstrip,
        "single_word": token.single_word,
        "special": token.special,
    }


def _to_py(value: Any) -> Any:
    """Tensors / arrays (and lists of them) to plain Python lists and ints."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_to_py(v) for v in value]
    return value


def _is_text_input(t: Any) -> bool:
    """``str``, ``list[str]``, ``list[list[str]]`` or pairs of pre-tokenized lists (transformers' rule)."""
    if isinstance(t, str):
        return True
    if isinstance(t, (list, tuple)):
        if len(t) == 0 or isinstance(t[0], str):
            return True
        if isinstance(t[0], (list, tuple)):
            if len(t[0]) == 0 or isinstance(t[0][0], str):
                return True
            if isinstance(t[0][0], (list, tuple)):
                return len(t[0][0]) == 0 or isinstance(t[0][0][0], str)
    return False


class BatchEncoding(dict):
    """The output of :class:`LEDTokenizer`: a ``dict`` (``input_ids``, ``attention_mask``, ...) with attribute
    access, ``.to(device)`` for tensors and the ``tokenizers`` encodings in ``.encodings``."""

    def __init__(
        self, data: Mapping[str, Any] | None = None, encodings: list[Encoding] | None = None
    ) -> None:
        super().__init__(data or {})
        self.encodings = encodings

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e

    def to(self, device: Any) -> BatchEncoding:
        """Move every tensor value to ``device`` (in place); returns ``self``."""
        for key, value in self.items():
            if hasattr(value, "to"):
                self[key] = value.to(device)
        return self

    def tokens(self, batch_index: int = 0) -> list[str]:
        """The tokens (strings) of one encoded sequence."""
        if not self.encodings:
            raise ValueError("tokens() needs the encodings of a tokenizer call")
        return self.encodings[batch_index].tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """The word index of each token of one encoded sequence (``None`` for special tokens)."""
        if not self.encodings:
            raise ValueError("word_ids() needs the encodings of a tokenizer call")
        return self.encodings[batch_index].word_ids

    def convert_to_tensors(self, tensor_type: str | None) -> BatchEncoding:
        """Convert the list values to ``torch`` (``"pt"``) or ``numpy`` (``"np"``) int64 arrays, in place."""
        if tensor_type is None:
            return self
        if tensor_type not in ("pt", "np"):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {tensor_type!r}")
        if tensor_type == "pt":
            import torch

            convert = lambda v: torch.tensor(v, dtype=torch.int64)
            is_tensor = torch.is_tensor
        else:
            import numpy as np

            convert = lambda v: np.asarray(v, dtype=np.int64)
            is_tensor = lambda v: isinstance(v, np.ndarray)
        for key, value in self.items():
            if is_tensor(value):
                continue
            try:
                self[key] = convert(value)
            except (ValueError, TypeError) as e:
                raise ValueError(
                    f"Unable to create a tensor from `{key}`: the sequences have different lengths. Pass "
                    "padding=True (or 'max_length') and truncation=True to get a rectangular batch."
                ) from e
        return self


# --------------------------------------------------------------------------------------------- tokenizer
class LEDTokenizer:
    """Byte-level BPE tokenizer of LED (the BART / RoBERTa vocabulary), id-for-id equal to
    ``transformers.LEDTokenizerFast`` on the same files.

    Usually built with :meth:`from_pretrained`. The constructor takes the vocabulary and the merges directly.

    Args:
        vocab: token -> id.
        merges: BPE merges, as ``(left, right)`` pairs (or ``"left right"`` strings), by priority.
        bos_token, eos_token, sep_token, cls_token, unk_token, pad_token, mask_token: the special tokens
            (strings or ``tokenizers.AddedToken``).
        add_prefix_space: add a space before the text, so its first word is tokenized like a word inside a
            sentence (not what LED was trained with; needed for ``is_split_into_words=True``).
        trim_offsets: trim the whitespace out of the offsets (``return_offsets_mapping``).
        model_max_length: the longest input the model takes (16384 for ``allenai/led-base-16384``); used when
            ``truncation=True`` or ``padding="max_length"`` come without ``max_length``. ``None``: no limit.
        padding_side, truncation_side: ``"right"`` (default) or ``"left"``.
        added_tokens: ``(id, token)`` pairs of tokens added on top of the BPE vocabulary (``tokenizer.json``'s
            ``added_tokens`` or ``tokenizer_config.json``'s ``added_tokens_decoder``), added first, by id.
        extra_special_tokens: more special tokens (skipped by ``decode(skip_special_tokens=True)``).
        clean_up_tokenization_spaces: default of ``decode``'s argument of that name; like ``transformers`` 5
            it only takes effect together with
            ``clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output``.
        name_or_path: where the files came from (informational).
    """

    vocab_files_names = {
        "vocab_file": VOCAB_FILE,
        "merges_file": MERGES_FILE,
        "tokenizer_file": TOKENIZER_FILE,
    }
    model_input_names = list(_MODEL_INPUT_NAMES)
    pad_token_type_id = 0

    def __init__(
        self,
        vocab: Mapping[str, int],
        merges: Sequence[tuple[str, str] | str],
        *,
        bos_token: str | AddedToken = "<s>",
        eos_token: str | AddedToken = "</s>",
        sep_token: str | AddedToken = "</s>",
        cls_token: str | AddedToken = "<s>",
        unk_token: str | AddedToken = "<unk>",
        pad_token: str | AddedToken = "<pad>",
        mask_token: str | AddedToken = "<mask>",
        add_prefix_space: bool = False,
        trim_offsets: bool = True,
        model_max_length: int | None = None,
        padding_side: str = "right",
        truncation_side: str = "right",
        added_tokens: Iterable[tuple[int, str | AddedToken | Mapping[str, Any]]] | None = None,
        extra_special_tokens: Sequence[str | AddedToken] | None = None,
        clean_up_tokenization_spaces: bool = False,
        clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output: bool = False,
        name_or_path: str = "",
    ) -> None:
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        if truncation_side not in ("right", "left"):
            raise ValueError(f"truncation_side must be 'right' or 'left', got {truncation_side!r}")
        self.add_prefix_space = bool(add_prefix_space)
        self.trim_offsets = bool(trim_offsets)
        self.model_max_length = int(model_max_length) if model_max_length is not None else VERY_LARGE_INTEGER
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = bool(
            clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output
        )
        self.name_or_path = str(name_or_path)

        merge_pairs = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
        tok = Tokenizer(
            BPE(
                vocab=dict(vocab),
                merges=merge_pairs,
                dropout=None,
                continuing_subword_prefix="",
                end_of_word_suffix="",
                fuse_unk=False,
            )
        )
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=self.add_prefix_space)
        tok.decoder = decoders.ByteLevel()
        self._tokenizer = tok

        named = {
            "bos_token": bos_token,
            "eos_token": eos_token,
            "unk_token": unk_token,
            "sep_token": sep_token,
            "pad_token": pad_token,
            "cls_token": cls_token,
            "mask_token": mask_token,
        }
        # Tokens already described (tokenizer.json / tokenizer_config.json) keep their flags (lstrip, ...).
        given = sorted(((int(i), _to_added_token(t)) for i, t in (added_tokens or ())), key=lambda x: x[0])
        by_content = {t.content: t for _, t in given}
        self._special: dict[str, AddedToken] = {}
        for key, value in named.items():
            if value is None:
                continue
            content = value.content if isinstance(value, AddedToken) else str(value)
            self._special[key] = by_content.get(content, _to_added_token(value))
        self._extra_special = [_to_added_token(t) for t in (extra_special_tokens or ())]

        # Same order as transformers' TokenizersBackend: the described added tokens (by id), then the named
        # special tokens, then the extra special tokens, each only if not added yet.
        named_contents = {t.content for t in self._special.values()}
        to_add: list[AddedToken] = []
        seen: set[str] = set()
        for _, token in given:
            if token.content in seen:
                continue
            if token.content in named_contents and not token.special:
                token.special = True
            to_add.append(token)
            seen.add(token.content)
        for token in [*self._special.values(), *self._extra_special]:
            if token.content not in seen:
                to_add.append(token)
                seen.add(token.content)
        if to_add:
            self._tokenizer.add_tokens(to_add)

        self._tokenizer.post_processor = processors.RobertaProcessing(
            (self.sep_token, self.sep_token_id),
            (self.cls_token, self.cls_token_id),
            trim_offsets=self.trim_offsets,
            add_prefix_space=self.add_prefix_space,
        )
        self._warned_too_long = False

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> LEDTokenizer:
        """Load a tokenizer from a Hugging Face LED folder (or a ``tokenizer.json`` file).

        The folder holds ``tokenizer.json`` or ``vocab.json`` + ``merges.txt`` (``tokenizer.json`` wins when
        both are there, as in ``transformers``), and optionally ``tokenizer_config.json``
        (``model_max_length``, ``add_prefix_space``, ``trim_offsets``, special tokens,
        ``added_tokens_decoder``, ...) and ``special_tokens_map.json``. Keyword arguments (any constructor
        argument) override the config. Nothing is downloaded: ``path`` must be local.
        """
        path = os.fspath(path)
        if os.path.isfile(path):
            folder, tokenizer_file = os.path.dirname(path), path
        elif os.path.isdir(path):
            folder, tokenizer_file = path, os.path.join(path, TOKENIZER_FILE)
        else:
            raise OSError(f"{path!r} is neither a local folder nor a tokenizer.json file (no download here)")
        vocab_file = os.path.join(folder, VOCAB_FILE)
        merges_file = os.path.join(folder, MERGES_FILE)

        config: dict[str, Any] = {}
        config_file = os.path.join(folder, TOKENIZER_CONFIG_FILE)
        if os.path.isfile(config_file):
            with open(config_file, encoding="utf-8") as f:
                config = json.load(f)

        init: dict[str, Any] = {}
        for key in (
            "add_prefix_space",
            "trim_offsets",
            "padding_side",
            "truncation_side",
            "clean_up_tokenization_spaces",
            "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output",
        ):
            if config.get(key) is not None:
                init[key] = config[key]
        if config.get("model_max_length") is not None:
            init["model_max_length"] = int(config["model_max_length"])
        for key in SPECIAL_TOKENS_ATTRIBUTES:
            if key in config:
                init[key] = _to_added_token(config[key]) if config[key] is not None else None
        extra = config.get("extra_special_tokens", config.get("additional_special_tokens"))
        if isinstance(extra, list) and extra:
            init["extra_special_tokens"] = [_to_added_token(t) for t in extra]

        has_tokenizer_json = os.path.isfile(tokenizer_file)
        added_tokens: list[tuple[int, AddedToken]] = []
        if "added_tokens_decoder" in config:
            added_tokens = [(int(i), _to_added_token(t)) for i, t in config["added_tokens_decoder"].items()]
        else:
            special_map_file = os.path.join(folder, SPECIAL_TOKENS_MAP_FILE)
            if os.path.isfile(special_map_file):
                with open(special_map_file, encoding="utf-8") as f:
                    special_map = json.load(f)
                for key, value in special_map.items():
                    if key in SPECIAL_TOKENS_ATTRIBUTES and value is not None:
                        init[key] = _to_added_token(value)
                    elif key in ("additional_special_tokens", "extra_special_tokens") and isinstance(
                        value, list
                    ):
                        init["extra_special_tokens"] = [_to_added_token(t) for t in value]
            if has_tokenizer_json:
                with open(tokenizer_file, encoding="utf-8") as f:
                    added = json.load(f).get("added_tokens", [])
                added_tokens = [
                    (int(t["id"]), _to_added_token(t, special=bool(t.get("special")))) for t in added
                ]

        if has_tokenizer_json:
            with open(tokenizer_file, encoding="utf-8") as f:
                model = json.load(f)["model"]
            if model.get("type", "BPE") != "BPE":
                raise ValueError(f"{tokenizer_file}: expected a BPE model, found {model.get('type')!r}")
            vocab = model["vocab"]
            if isinstance(vocab, list):
                vocab = {(t[0] if isinstance(t, list) else t): i for i, t in enumerate(vocab)}
            merges = model.get("merges", [])
        elif os.path.isfile(vocab_file) and os.path.isfile(merges_file):
            vocab, merges = BPE.read_file(vocab_file, merges_file)
        else:
            raise OSError(f"{path!r} has neither {TOKENIZER_FILE} nor {VOCAB_FILE} + {MERGES_FILE}")

        init["added_tokens"] = added_tokens
        init["name_or_path"] = path
        init.update(kwargs)
        return cls(vocab, merges, **init)

    def save_pretrained(self, save_directory: str | os.PathLike) -> tuple[str, ...]:
        """Write ``vocab.json``, ``merges.txt``, ``tokenizer.json``, ``tokenizer_config.json`` and
        ``special_tokens_map.json`` to ``save_directory`` (created if needed). Both this class and
        ``transformers.AutoTokenizer`` / ``LEDTokenizerFast`` load the result. Returns the written paths."""
        save_directory = os.fspath(save_directory)
        os.makedirs(save_directory, exist_ok=True)
        written = list(self._tokenizer.model.save(save_directory))
        tokenizer_file = os.path.join(save_directory, TOKENIZER_FILE)
        self._tokenizer.save(tokenizer_file)
        written.append(tokenizer_file)

        special = {key: _added_token_to_json(tok) for key, tok in self._special.items()}
        config: dict[str, Any] = {
            "tokenizer_class": "LEDTokenizer",
            "add_prefix_space": self.add_prefix_space,
            "trim_offsets": self.trim_offsets,
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "errors": "replace",
            **{key: tok.content for key, tok in self._special.items()},
            "added_tokens_decoder": {
                str(i): _added_token_to_json(t) for i, t in sorted(self.added_tokens_decoder.items())
            },
        }
        if self.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output:
            config["clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"] = True
        if self._extra_special:
            config["extra_special_tokens"] = [t.content for t in self._extra_special]
            special["additional_special_tokens"] = [_added_token_to_json(t) for t in self._extra_special]
        config_file = os.path.join(save_directory, TOKENIZER_CONFIG_FILE)
        with open(config_file, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)
            f.write("\n")
        special_file = os.path.join(save_directory, SPECIAL_TOKENS_MAP_FILE)
        with open(special_file, "w", encoding="utf-8") as f:
            json.dump(special, f, indent=2, ensure_ascii=False)
            f.write("\n")
        return (*written, config_file, special_file)

    # ----------------------------------------------------------------------------------------- vocabulary
    @property
    def backend_tokenizer(self) -> Tokenizer:
        """The ``tokenizers.Tokenizer`` doing the work."""
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Size of the BPE vocabulary, without the added tokens."""
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        """Size of the full vocabulary, added tokens included (the embedding size needed)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        """token -> id, added tokens included."""
        return self._tokenizer.get_vocab(with_added_tokens=True)

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        """id -> ``AddedToken`` of the tokens added on top of the BPE model (the special tokens, ...)."""
        return self._tokenizer.get_added_tokens_decoder()

    def add_tokens(
        self, new_tokens: str | AddedToken | Sequence[str | AddedToken], special_tokens: bool = False
    ) -> int:
        """Add tokens (never split, appended to the vocabulary if new); returns how many were new. Resize the
        model's embeddings to ``len(tokenizer)`` afterwards."""
        if isinstance(new_tokens, (str, AddedToken)):
            new_tokens = [new_tokens]
        tokens = [_to_added_token(t, special=special_tokens) for t in new_tokens]
        if special_tokens:
            for t in tokens:
                if t.content not in {x.content for x in self._extra_special}:
                    self._extra_special.append(t)
            return self._tokenizer.add_special_tokens(tokens)
        return self._tokenizer.add_tokens(tokens)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Token(s) -> id(s); unknown tokens map to ``unk_token_id``."""
        if isinstance(tokens, str):
            index = self._tokenizer.token_to_id(tokens)
            return self.unk_token_id if index is None else index
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(
        self, ids: int | Sequence[int], skip_special_tokens: bool = False
    ) -> str | list[str]:
        """Id(s) -> token string(s) (byte-level form, e.g. ``'Ġworld'``); optionally without special ones."""
        ids = _to_py(ids)
        if isinstance(ids, int):
            return self._tokenizer.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._tokenizer.id_to_token(int(i)) for i in ids if int(i) not in skip]

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Join byte-level tokens back into text."""
        return self._tokenizer.decoder.decode(list(tokens))

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        """The tokens (strings) of ``text`` (and ``pair``), without special tokens unless asked."""
        inputs = (text, pair) if pair else text
        self._configure_backend("do_not_pad", "do_not_truncate", None, 0, None, None)
        self._tokenizer.encode_special_tokens = False
        return self._tokenizer.encode_batch([inputs], add_special_tokens=add_special_tokens)[0].tokens

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many special tokens encoding adds: 2 for one sequence, 4 for a pair."""
        return self._tokenizer.num_special_tokens_to_add(pair)

    # ----------------------------------------------------------------------------------------- special tokens
    def _special_str(self, key: str) -> str | None:
        token = self._special.get(key)
        return None if token is None else token.content

    def _special_id(self, key: str) -> int | None:
        token = self._special.get(key)
        return None if token is None else self.convert_tokens_to_ids(token.content)

    @property
    def bos_token(self) -> str | None:
        """``<s>``."""
        return self._special_str("bos_token")

    @property
    def eos_token(self) -> str | None:
        """``</s>``."""
        return self._special_str("eos_token")

    @property
    def unk_token(self) -> str | None:
        """``<unk>``."""
        return self._special_str("unk_token")

    @property
    def sep_token(self) -> str | None:
        """``</s>`` (ends each sequence of a pair)."""
        return self._special_str("sep_token")

    @property
    def pad_token(self) -> str | None:
        """``<pad>``."""
        return self._special_str("pad_token")

    @property
    def cls_token(self) -> str | None:
        """``<s>`` (starts every encoded input)."""
        return self._special_str("cls_token")

    @property
    def mask_token(self) -> str | None:
        """``<mask>``."""
        return self._special_str("mask_token")

    @property
    def bos_token_id(self) -> int | None:
        """Id of ``<s>`` (0 in LED)."""
        return self._special_id("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        """Id of ``</s>`` (2 in LED)."""
        return self._special_id("eos_token")

    @property
    def unk_token_id(self) -> int | None:
        """Id of ``<unk>`` (3 in LED)."""
        token = self._special.get("unk_token")
        return None if token is None else self._tokenizer.token_to_id(token.content)

    @property
    def sep_token_id(self) -> int | None:
        """Id of the separator ``</s>``."""
        return self._special_id("sep_token")

    @property
    def pad_token_id(self) -> int | None:
        """Id of ``<pad>`` (1 in LED)."""
        return self._special_id("pad_token")

    @property
    def cls_token_id(self) -> int | None:
        """Id of the first token ``<s>``."""
        return self._special_id("cls_token")

    @property
    def mask_token_id(self) -> int | None:
        """Id of ``<mask>`` (the last id of the LED vocabulary)."""
        return self._special_id("mask_token")

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """Attribute name -> special token string (``{"bos_token": "<s>", ...}``)."""
        out: dict[str, Any] = {key: tok.content for key, tok in self._special.items()}
        if self._extra_special:
            out["extra_special_tokens"] = [t.content for t in self._extra_special]
        return out

    @property
    def all_special_tokens(self) -> list[str]:
        """The distinct special token strings (named ones, then the extra ones)."""
        out: list[str] = []
        for token in [*self._special.values(), *self._extra_special]:
            if token.content not in out:
                out.append(token.content)
        return out

    @property
    def all_special_ids(self) -> list[int]:
        """Ids of :attr:`all_special_tokens`."""
        return [self.convert_tokens_to_ids(t) for t in self.all_special_tokens]

    # ----------------------------------------------------------------------------------------- encoding
    def _strategies(
        self,
        padding: bool | str,
        truncation: bool | str | None,
        max_length: int | None,
        pad_to_multiple_of: int | None,
        verbose: bool = True,
    ) -> tuple[str, str, int | None]:
        """``transformers``' ``_get_padding_truncation_strategies``: (padding, truncation, max_length)."""
        padding = getattr(padding, "value", padding)
        truncation = getattr(truncation, "value", truncation)
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"  # max_length alone truncates
        if padding is False:
            pad = "do_not_pad"
        elif padding is True:
            if verbose and max_length is not None and truncation in (None, False, "do_not_truncate"):
                warnings.warn(
                    "`max_length` is ignored when `padding`=`True` and there is no truncation strategy. "
                    "To pad to max length, use `padding='max_length'`.",
                    stacklevel=3,
                )
            pad = "longest"
        elif padding in _PADDING:
            pad = _PADDING[padding]
        else:
            raise ValueError(
                f"padding must be a bool, 'longest', 'max_length' or 'do_not_pad', got {padding!r}"
            )
        if truncation is None or truncation is False:
            trunc = "do_not_truncate"
        elif truncation is True:
            trunc = "longest_first"
        elif truncation in _TRUNCATION:
            trunc = truncation
        else:
            raise ValueError(f"truncation must be a bool or one of {_TRUNCATION}, got {truncation!r}")
        if max_length is None:
            if pad == "max_length":
                if self.model_max_length > _LARGE_INTEGER:
                    pad = "do_not_pad"
                else:
                    max_length = self.model_max_length
            if trunc != "do_not_truncate":
                if self.model_max_length > _LARGE_INTEGER:
                    trunc = "do_not_truncate"
                else:
                    max_length = self.model_max_length
        if pad != "do_not_pad" and self.pad_token_id is None:
            raise ValueError("Asking to pad but the tokenizer has no pad_token")
        if (
            trunc != "do_not_truncate"
            and pad != "do_not_pad"
            and pad_to_multiple_of is not None
            and max_length is not None
            and max_length % pad_to_multiple_of != 0
        ):
            raise ValueError(
                "Truncation and padding are both activated but "
                f"truncation length ({max_length}) is not a multiple of "
                f"pad_to_multiple_of ({pad_to_multiple_of})."
            )
        return pad, trunc, max_length

    def _configure_backend(
        self,
        pad: str,
        trunc: str,
        max_length: int | None,
        stride: int,
        pad_to_multiple_of: int | None,
        padding_side: str | None,
    ) -> None:
        tok = self._tokenizer
        if trunc == "do_not_truncate":
            if tok.truncation is not None:
                tok.no_truncation()
        else:
            tok.enable_truncation(
                max_length=max_length, stride=stride, strategy=trunc, direction=self.truncation_side
            )
        if pad == "do_not_pad":
            if tok.padding is not None:
                tok.no_padding()
        else:
            tok.enable_padding(
                direction=padding_side or self.padding_side,
                pad_id=self.pad_token_id,
                pad_type_id=self.pad_token_type_id,
                pad_token=self.pad_token,
                length=max_length if pad == "max_length" else None,
                pad_to_multiple_of=pad_to_multiple_of,
            )

    def _encode(
        self,
        text: Any,
        text_pair: Any,
        *,
        add_special_tokens: bool,
        pad: str,
        trunc: str,
        max_length: int | None,
        stride: int,
        is_split_into_words: bool,
        pad_to_multiple_of: int | None,
        padding_side: str | None,
        return_tensors: str | None,
        return_token_type_ids: bool | None,
        return_attention_mask: bool | None,
        return_overflowing_tokens: bool,
        return_special_tokens_mask: bool,
        return_offsets_mapping: bool,
        return_length: bool,
        split_special_tokens: bool,
        verbose: bool,
    ) -> BatchEncoding:
        if not _is_text_input(text) or (text_pair is not None and not _is_text_input(text_pair)):
            raise ValueError(
                "text input must be of type `str` (single example), `list[str]` (batch or single "
                "pretokenized example) or `list[list[str]]` (batch of pretokenized examples)."
            )
        if is_split_into_words:
            is_batched = isinstance(text, (list, tuple)) and bool(text) and isinstance(text[0], (list, tuple))
        else:
            is_batched = isinstance(text, (list, tuple))
        if is_batched:
            if isinstance(text_pair, str):
                raise TypeError(
                    "when tokenizing batches of text, `text_pair` must be a list of the same length"
                )
            if text_pair is not None and len(text) != len(text_pair):
                raise ValueError(
                    f"batch length of `text` ({len(text)}) != that of `text_pair` ({len(text_pair)})"
                )
            batch = list(zip(text, text_pair)) if text_pair is not None else list(text)
        else:
            batch = [(text, text_pair)] if text_pair else [text]

        self._configure_backend(pad, trunc, max_length, stride, pad_to_multiple_of, padding_side)
        if self._tokenizer.encode_special_tokens != split_special_tokens:
            self._tokenizer.encode_special_tokens = split_special_tokens
        encodings = self._tokenizer.encode_batch(
            batch, add_special_tokens=add_special_tokens, is_pretokenized=is_split_into_words
        )

        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        data: dict[str, list[Any]] = {"input_ids": []}
        if return_token_type_ids:
            data["token_type_ids"] = []
        if return_attention_mask:
            data["attention_mask"] = []
        if return_special_tokens_mask:
            data["special_tokens_mask"] = []
        if return_offsets_mapping:
            data["offset_mapping"] = []
        if return_length:
            data["length"] = []
        flat: list[Encoding] = []
        sample_map: list[int] = []
        for i, enc in enumerate(encodings):
            parts = [enc, *enc.overflowing] if return_overflowing_tokens else [enc]
            for e in parts:
                flat.append(e)
                sample_map.append(i)
                data["input_ids"].append(e.ids)
                if return_token_type_ids:
                    data["token_type_ids"].append(e.type_ids)
                if return_attention_mask:
                    data["attention_mask"].append(e.attention_mask)
                if return_special_tokens_mask:
                    data["special_tokens_mask"].append(e.special_tokens_mask)
                if return_offsets_mapping:
                    data["offset_mapping"].append(e.offsets)
                if return_length:
                    data["length"].append(len(e.ids))
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = sample_map
        if verbose and max_length is None and not self._warned_too_long:
            if any(len(ids) > self.model_max_length for ids in data["input_ids"]):
                logger.warning(
                    "Token indices sequence length is longer than the specified maximum sequence length for "
                    "this model (> %d). Running it through the model may fail.",
                    self.model_max_length,
                )
                self._warned_too_long = True

        out = BatchEncoding(data, flat)
        out.convert_to_tensors(return_tensors)
        if not is_batched and return_tensors is None and not return_overflowing_tokens:
            out = BatchEncoding(
                {k: (v[0] if len(v) > 0 and isinstance(v[0], list) else v) for k, v in out.items()}, flat
            )
        return out

    def __call__(
        self,
        text: str | list[str] | list[list[str]] | None = None,
        text_pair: str | list[str] | list[list[str]] | None = None,
        text_target: str | list[str] | None = None,
        text_pair_target: str | list[str] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        split_special_tokens: bool = False,
        global_attention: str | None = None,
        max_target_length: int | None = None,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Tokenize one text, a batch of texts, or (batches of) text pairs; same rules and results as
        ``transformers``' tokenizers.

        Args:
            text: a string, or a list of strings (a batch); with ``is_split_into_words``, a list of words or a
                list of such lists.
            text_pair: the second sequence(s) (``<s> text </s></s> text_pair </s>``), e.g. the context after a
                question.
            text_target, text_pair_target: target text(s) (summaries); encoded with the same settings (and
                ``max_target_length`` if given) into ``labels``, or returned alone if ``text`` is ``None``.
            add_special_tokens: add ``<s>`` ... ``</s>``.
            padding: ``False``/``"do_not_pad"``; ``True``/``"longest"`` (to the longest in the batch);
                ``"max_length"`` (to ``max_length``, or ``model_max_length``).
            truncation: ``True``/``"longest_first"``, ``"only_first"``, ``"only_second"``, or ``False``.
                Giving ``max_length`` alone (without padding) turns on ``"longest_first"``.
            max_length: length limit for truncation / padding length for ``"max_length"``.
            stride: overlap of the overflowing windows (``return_overflowing_tokens``).
            pad_to_multiple_of: round the padded length up to a multiple; for LED use the attention window
                (e.g. 1024), which spares the model its own padding.
            padding_side: override ``self.padding_side``.
            return_tensors: ``"pt"`` (``torch.int64``), ``"np"``, or ``None`` for Python lists (a single input
                then gives flat lists).
            return_token_type_ids, return_attention_mask, return_special_tokens_mask, return_offsets_mapping,
                return_length, return_overflowing_tokens: extra outputs, as in ``transformers``.
            split_special_tokens: tokenize special-token strings in the text as ordinary text.
            global_attention: also return ``global_attention_mask``: ``"first"`` (first token global, the
                summarization recipe) or ``"question"`` (the ``<s>`` + question tokens of each
                question/context pair, the QA recipe). See :meth:`build_global_attention_mask`.
            verbose: warnings on/off.

        Returns:
            A :class:`BatchEncoding` (a ``dict``) with ``input_ids``, ``attention_mask`` and the extras
            asked for.
        """
        if text is None and text_target is None:
            raise ValueError("You need to specify either `text` or `text_target`.")
        pad, trunc, max_length = self._strategies(
            padding, truncation, max_length, pad_to_multiple_of, verbose
        )
        common = dict(
            add_special_tokens=add_special_tokens,
            pad=pad,
            trunc=trunc,
            stride=stride,
            is_split_into_words=is_split_into_words,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            return_tensors=return_tensors,
            return_token_type_ids=return_token_type_ids,
            return_attention_mask=return_attention_mask,
            return_overflowing_tokens=return_overflowing_tokens,
            return_special_tokens_mask=return_special_tokens_mask,
            return_offsets_mapping=return_offsets_mapping,
            return_length=return_length,
            split_special_tokens=split_special_tokens,
            verbose=verbose,
        )
        encodings = None
        if text is not None:
            encodings = self._encode(text, text_pair, max_length=max_length, **common)
            if global_attention is not None:
                encodings["global_attention_mask"] = self.build_global_attention_mask(
                    encodings["input_ids"], encodings.get("attention_mask"), mode=global_attention
                )
        if text_target is None:
            return encodings
        target_max = max_target_length if max_target_length is not None else max_length
        targets = self._encode(text_target, text_pair_target, max_length=target_max, **common)
        if encodings is None:
            return targets
        encodings["labels"] = targets["input_ids"]
        return encodings

    def encode(
        self,
        text: str | list[str],
        text_pair: str | list[str] | None = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        **kwargs: Any,
    ) -> list[int] | Any:
        """The ``input_ids`` of one text (or pair), as ``__call__`` computes them."""
        return self(
            text,
            text_pair,
            add_special_tokens=add_special_tokens,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            **kwargs,
        )["input_ids"]

    # ------------------------------------------------------------------------------------- global attention
    def build_global_attention_mask(
        self,
        input_ids: Any,
        attention_mask: Any = None,
        *,
        mode: str = "first",
        spans: tuple[int, int] | Sequence[tuple[int, int]] | None = None,
    ) -> Any:
        """The LED encoder's ``global_attention_mask`` (1 = global token, 0 = local) for ``input_ids``.

        Args:
            input_ids: one sequence (list of ints / 1-D tensor) or a batch (list of lists / 2-D tensor or
                array).
            attention_mask: same shape; padded positions (0) are never global. ``None``: positions holding
                ``pad_token_id`` count as padding.
            mode:
                - ``"first"``: the first non-padded token (``<s>``) is global: the recipe for summarization.
                - ``"question"``: for a question/context pair encoded as
                  ``<s> question </s></s> context </s>``, every token before the first ``</s>`` (``<s>`` and
                  the question) is global: the QA recipe (Hugging Face Longformer's
                  ``_compute_global_attention_mask``).
                - ``"span"``: the token positions ``start <= i < end`` of ``spans``.
                - ``"none"``: all zeros.
            spans: for ``mode="span"`` (implied when given): one ``(start, end)`` for every row, or one per
                row.

        Returns:
            The mask, in the type of ``input_ids`` (a tensor of ``input_ids``' shape, dtype and device, a
            numpy array, or lists).
        """
        if spans is not None and mode == "first":
            mode = "span"
        if mode not in ("first", "question", "span", "none"):
            raise ValueError(f"mode must be 'first', 'question', 'span' or 'none', got {mode!r}")
        ids = _to_py(input_ids)
        single = len(ids) == 0 or not isinstance(ids[0], list)
        rows = [ids] if single else ids
        masks = _to_py(attention_mask) if attention_mask is not None else None
        if masks is not None and single:
            masks = [masks]
        if masks is not None and (
            len(masks) != len(rows)
            or any(not isinstance(m, list) or len(m) != len(row) for m, row in zip(masks, rows))
        ):
            raise ValueError("attention_mask must have the shape of input_ids (one 0/1 per token)")
        if mode == "span":
            if spans is None:
                raise ValueError("mode='span' needs spans=(start, end) or one (start, end) per row")
            span_list = _to_py(spans)
            if len(span_list) == 2 and all(isinstance(s, int) for s in span_list):
                span_list = [span_list] * len(rows)
            if len(span_list) != len(rows):
                raise ValueError(f"got {len(span_list)} spans for {len(rows)} rows")
            for span in span_list:
                if not (isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) for x in span)):
                    raise TypeError(f"spans must be (start, end) int pairs, got {span!r}")
        sep = self.sep_token_id
        pad_id = self.pad_token_id
        out: list[list[int]] = []
        for r, row in enumerate(rows):
            valid = masks[r] if masks is not None else [int(t != pad_id) for t in row]
            g = [0] * len(row)
            if mode == "first":
                first = next((i for i, v in enumerate(valid) if v), None)
                if first is not None:
                    g[first] = 1
            elif mode == "question":
                try:
                    end = row.index(sep)
                except ValueError:
                    raise ValueError(
                        f"row {r} has no separator token {self.sep_token!r}: mode='question' needs the "
                        "question/context pair encoded with special tokens"
                    ) from None
                g[:end] = [1] * end
            elif mode == "span":
                start, end = span_list[r]
                start, end = max(0, int(start)), min(len(row), int(end))
                g[start:end] = [1] * max(0, end - start)
            out.append([gi if vi else 0 for gi, vi in zip(g, valid)])
        result: Any = out[0] if single else out
        if hasattr(input_ids, "new_tensor"):  # torch.Tensor: same shape, dtype, device
            return input_ids.new_tensor(result)
        if hasattr(input_ids, "dtype") and hasattr(input_ids, "shape"):  # numpy
            import numpy as np

            return np.asarray(result, dtype=input_ids.dtype)
        return result

    # ----------------------------------------------------------------------------------------- padding
    def pad(
        self,
        encoded_inputs: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
    ) -> BatchEncoding:
        """Pad already-encoded inputs (a dict of lists, a dict of batches, or a list of dicts: a collate_fn).

        ``input_ids`` is padded with ``pad_token_id``, ``attention_mask`` with 0, ``token_type_ids`` with 0,
        ``special_tokens_mask`` with 1, and **``global_attention_mask`` with 0** (``transformers`` 5 leaves it
        unpadded). Other keys (e.g. ``labels``) are left as they are. Same lengths as transformers' ``pad``.
        Tensor inputs give tensor outputs unless ``return_tensors`` says otherwise.
        """
        if (
            isinstance(encoded_inputs, (list, tuple))
            and encoded_inputs
            and isinstance(encoded_inputs[0], Mapping)
        ):
            encoded_inputs = {k: [ex[k] for ex in encoded_inputs] for k in encoded_inputs[0].keys()}
        encoded = dict(encoded_inputs)
        if "input_ids" not in encoded:
            raise ValueError(f"pad() needs `input_ids`, got keys {list(encoded)}")
        required = encoded["input_ids"]
        if required is None or len(required) == 0:
            if return_attention_mask:
                encoded["attention_mask"] = []
            return BatchEncoding(encoded)
        first = required[0]
        if isinstance(first, (list, tuple)):
            first = next((item[0] for item in required if len(item)), first)
        if not isinstance(first, (int, list, tuple)):
            if return_tensors is None:
                return_tensors = "pt" if hasattr(first, "new_tensor") else "np"
            encoded = {k: _to_py(v) for k, v in encoded.items()}
        pad, _, max_length = self._strategies(padding, None, max_length, None)
        required = encoded["input_ids"]
        single = not isinstance(required[0], (list, tuple))
        rows = [{k: v for k, v in encoded.items()}] if single else None
        if not single:
            n = len(required)
            if not all(len(v) == n for v in encoded.values()):
                raise ValueError("Some items in the input have a different batch size than others.")
            rows = [{k: v[i] for k, v in encoded.items()} for i in range(n)]
            if pad == "longest":
                max_length = max(len(x) for x in required)
                pad = "max_length"
        padded = [
            self._pad_one(r, max_length, pad, pad_to_multiple_of, padding_side, return_attention_mask)
            for r in rows
        ]
        if single:
            return BatchEncoding(padded[0]).convert_to_tensors(return_tensors)
        out = {k: [p[k] for p in padded] for k in padded[0]}
        return BatchEncoding(out).convert_to_tensors(return_tensors)

    def _pad_one(
        self,
        inputs: dict[str, Any],
        max_length: int | None,
        pad: str,
        pad_to_multiple_of: int | None,
        padding_side: str | None,
        return_attention_mask: bool | None,
    ) -> dict[str, Any]:
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        ids = list(inputs["input_ids"])
        if pad == "longest":
            max_length = len(ids)
        if max_length is not None and pad_to_multiple_of is not None and max_length % pad_to_multiple_of != 0:
            max_length = (max_length // pad_to_multiple_of + 1) * pad_to_multiple_of
        if return_attention_mask and "attention_mask" not in inputs:
            inputs["attention_mask"] = [1] * len(ids)
        if pad == "do_not_pad" or max_length is None or len(ids) == max_length:
            return inputs
        diff = max_length - len(ids)
        values = {
            "input_ids": self.pad_token_id,
            "token_type_ids": self.pad_token_type_id,
            "special_tokens_mask": 1,
            "global_attention_mask": 0,
        }
        if return_attention_mask:
            values["attention_mask"] = 0
        left = (padding_side or self.padding_side) == "left"
        for key, value in values.items():
            if key in inputs:
                seq = list(inputs[key])
                inputs[key] = [value] * diff + seq if left else seq + [value] * diff
        return inputs

    # ----------------------------------------------------------------------------------------- decoding
    @staticmethod
    def clean_up_tokenization(text: str) -> str:
        """Remove spaces before punctuation and English contractions (``" ." -> "."``, ``" 's" -> "'s"``)."""
        return (
            text.replace(" .", ".")
            .replace(" ?", "?")
            .replace(" !", "!")
            .replace(" ,", ",")
            .replace(" ' ", "'")
            .replace(" n't", "n't")
            .replace(" 'm", "'m")
            .replace(" 's", "'s")
            .replace(" 've", "'ve")
            .replace(" 're", "'re")
        )

    def _decode_one(self, ids: list[int], skip_special_tokens: bool, clean_up: bool | None) -> str:
        text = self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        if clean_up is None:
            # transformers 5 ignores `clean_up_tokenization_spaces` for BPE unless forced.
            clean_up = (
                self.clean_up_tokenization_spaces
                and self.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output
            )
        return self.clean_up_tokenization(text) if clean_up else text

    def decode(
        self,
        token_ids: int | Sequence[int] | Sequence[Sequence[int]] | Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str | list[str]:
        """Ids -> text. A batch (list of lists, 2-D tensor) gives a list of strings.

        Args:
            token_ids: an id, a sequence of ids (list, 1-D tensor / array), or a batch of them.
            skip_special_tokens: drop ``<s>``, ``</s>``, ``<pad>``, ``<mask>``, ... .
            clean_up_tokenization_spaces: ``True`` removes spaces before punctuation and contractions
                (``" ."``, ``" 's"``; the ``transformers`` 4 default). ``None`` (default) follows the config
                the way ``transformers`` 5 does: off for this BPE tokenizer unless
                ``clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output`` is set too.
        """
        ids = _to_py(token_ids)
        if isinstance(ids, int):
            ids = [ids]
        if isinstance(ids, Mapping):
            ids = ids["input_ids"]
        if ids and isinstance(ids[0], (list, tuple)):
            return [self._decode_one(seq, skip_special_tokens, clean_up_tokenization_spaces) for seq in ids]
        return self._decode_one(ids, skip_special_tokens, clean_up_tokenization_spaces)

    def batch_decode(
        self,
        sequences: Sequence[Sequence[int]] | Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> list[str]:
        """Decode a batch of id sequences (list of lists, 2-D tensor, ...) into a list of strings."""
        result = self.decode(sequences, skip_special_tokens, clean_up_tokenization_spaces)
        return [result] if isinstance(result, str) else result

    def __repr__(self) -> str:
        return (
            f"LEDTokenizer(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
            f"len={len(self)}, "
            f"model_max_length={self.model_max_length}, add_prefix_space={self.add_prefix_space}, "
            f"padding_side={self.padding_side!r}, special_tokens={self.special_tokens_map})"
        )
