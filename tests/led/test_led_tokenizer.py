"""``led.LEDTokenizer`` against ``transformers.LEDTokenizerFast`` on the same files.

No network: a small byte-level BPE is trained here, with the ``tokenizers`` library, on the public-domain
prose below, and written out the ways LED checkpoints ship it (``vocab.json`` + ``merges.txt`` with ``<mask>``
as the last id; a ``tokenizer.json`` whose ``<mask>`` has ``lstrip=True``; a vocabulary without the special
tokens; a folder with a ``tokenizer_config.json``). Both tokenizers load each folder and must agree on ids,
masks, padding, truncation, pairs, tensors and decoding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")
from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors  # noqa: E402
from tokenizers.models import BPE  # noqa: E402
from tokenizers.trainers import BpeTrainer  # noqa: E402

from led.tokenization import LEDTokenizer  # noqa: E402

# Public-domain prose (Dickens, Austen, Melville, Lincoln, Carroll), for the tokenizer to learn from.
CORPUS = [
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
    "it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had "
    "everything before us, we had nothing before us, we were all going direct to Heaven, we were all going "
    "direct the other way.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
    "want of a wife. However little known the feelings or views of such a man may be on his first entering "
    "a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is "
    "considered the rightful property of some one or other of their daughters.",
    "Call me Ishmael. Some years ago - never mind how long precisely - having little or no money in my "
    "purse, and nothing particular to interest me on shore, I thought I would sail about a little and see "
    "the watery part of the world. It is a way I have of driving off the spleen and regulating the "
    "circulation.",
    "Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in "
    "Liberty, and dedicated to the proposition that all men are created equal. Now we are engaged in a "
    "great civil war, testing whether that nation, or any nation so conceived and so dedicated, can long "
    "endure.",
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to "
    "do: once or twice she had peeped into the book her sister was reading, but it had no pictures or "
    "conversations in it, 'and what is the use of a book,' thought Alice, 'without pictures or "
    "conversations?' So she was considering in her own mind (as well as she could, for the hot day made "
    "her feel very sleepy and stupid), whether the pleasure of making a daisy-chain would be worth the "
    "trouble of getting up and picking the daisies, when suddenly a White Rabbit with pink eyes ran close "
    "by her. Don't you think it's odd? We've seen they're here; I'm sure you'll agree.",
]

LONG_TEXT = " ".join(CORPUS)

TEXTS = [
    "It was the best of times.",
    " It was the worst of times.",  # leading space: a different first token
    "trailing spaces   ",
    "  several   inner    spaces\tand\ttabs\nand\nnewlines  ",
    "",
    " ",
    "Café, naïve façade — “curly quotes” and ‘single’ ones… 日本語のテキスト, emoji 🙂🚀, Ελληνικά, русский.",
    "Don't you think it's odd? We've seen they're here; I'm sure you'll agree . Yes , it is !",
    "Numbers 1234567890 and symbols @#$%^&*()_+-=[]{}|;:<>/~`",
    "hello <mask> world, <s> inside </s> text <pad> and <unk>",
    "a",
    LONG_TEXT,
]

QUESTIONS = ["Who sailed about a little?", "What was the age of?", "Who was tired?"]
CONTEXTS = [CORPUS[2], CORPUS[0], CORPUS[4]]

FOLDERS = ["files", "json", "nospecial", "config"]


# --------------------------------------------------------------------------------------------- fixtures
def _train_model(vocab_size: int = 700) -> Tokenizer:
    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 2, trainer=trainer)
    return tok


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("led_tok")
    trained = _train_model()
    out: dict[str, str] = {}

    # 1. vocab.json + merges.txt, <s>=0 <pad>=1 </s>=2 <unk>=3 and <mask> the last id (the LED layout).
    files = root / "files"
    files.mkdir()
    trained.model.save(str(files))
    vocab = json.loads((files / "vocab.json").read_text(encoding="utf-8"))
    assert [vocab[t] for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    vocab["<mask>"] = len(vocab)
    (files / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    out["files"] = str(files)

    # 2. tokenizer.json only, built like a real LED tokenizer.json (<mask> with lstrip=True).
    jdir = root / "json"
    jdir.mkdir()
    merges = [
        tuple(line.split(" "))
        for line in (files / "merges.txt").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#version")
    ]
    full = Tokenizer(BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix=""))
    full.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    full.decoder = decoders.ByteLevel()
    full.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>"])
    full.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)])
    full.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    full.save(str(jdir / "tokenizer.json"))
    out["json"] = str(jdir)

    # 3. a vocabulary without any special token: they get appended.
    nospec = root / "nospecial"
    nospec.mkdir()
    plain = {t: i - 4 for t, i in vocab.items() if 4 <= i < len(vocab) - 1}
    (nospec / "vocab.json").write_text(json.dumps(plain, ensure_ascii=False), encoding="utf-8")
    (nospec / "merges.txt").write_text((files / "merges.txt").read_text(encoding="utf-8"), encoding="utf-8")
    out["nospecial"] = str(nospec)

    # 4. vocab.json + merges.txt + tokenizer_config.json with a model_max_length.
    cfg = root / "config"
    cfg.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (cfg / name).write_text((files / name).read_text(encoding="utf-8"), encoding="utf-8")
    config = {
        "model_max_length": 48,
        "add_prefix_space": False,
        "trim_offsets": True,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    }
    (cfg / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    out["config"] = str(cfg)
    return out


_CACHE: dict[tuple[str, str], tuple[LEDTokenizer, object]] = {}


@pytest.fixture(params=FOLDERS)
def pair(request: pytest.FixtureRequest, folders: dict[str, str]) -> tuple[LEDTokenizer, object]:
    """(ours, transformers') on one folder."""
    key = (request.param, folders[request.param])
    if key not in _CACHE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = transformers.LEDTokenizerFast.from_pretrained(folders[request.param])
        _CACHE[key] = (LEDTokenizer.from_pretrained(folders[request.param]), ref)
    return _CACHE[key]


def _same(ours: dict, ref: dict) -> None:
    """Same keys (in the same order) and equal values: lists, or tensors of the same dtype and shape."""
    assert list(ours.keys()) == list(ref.keys())
    for key in ref:
        a, b = ours[key], ref[key]
        if isinstance(b, torch.Tensor):
            assert isinstance(a, torch.Tensor), key
            assert a.dtype == b.dtype and a.shape == b.shape, (key, a.dtype, b.dtype, a.shape, b.shape)
            assert torch.equal(a, b), key
        else:
            assert a == b, key


def _call_both(ours: LEDTokenizer, ref: object, *args: object, **kwargs: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ref(*args, **kwargs)
        got = ours(*args, **kwargs)
    _same(got, expected)


# --------------------------------------------------------------------------------------------- vocabulary
def test_special_tokens_and_vocab(pair: tuple[LEDTokenizer, object]) -> None:
    ours, ref = pair
    for name in ("bos", "eos", "unk", "sep", "pad", "cls", "mask"):
        assert getattr(ours, f"{name}_token") == getattr(ref, f"{name}_token"), name
        assert getattr(ours, f"{name}_token_id") == getattr(ref, f"{name}_token_id"), name
    assert len(ours) == len(ref)
    assert ours.vocab_size == ref.vocab_size
    assert ours.get_vocab() == ref.get_vocab()
    assert ours.all_special_tokens == ref.all_special_tokens
    assert ours.all_special_ids == ref.all_special_ids
    assert ours.model_max_length == ref.model_max_length
    assert ours.num_special_tokens_to_add() == ref.num_special_tokens_to_add() == 2
    assert ours.num_special_tokens_to_add(pair=True) == ref.num_special_tokens_to_add(pair=True) == 4
    assert {i: str(t) for i, t in ours.added_tokens_decoder.items()} == {
        i: str(t) for i, t in ref.added_tokens_decoder.items()
    }


def test_led_layout(folders: dict[str, str]) -> None:
    tok = LEDTokenizer.from_pretrained(folders["files"])
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token_id == len(tok) - 1
    assert tok.sep_token_id == tok.eos_token_id and tok.cls_token_id == tok.bos_token_id
    ids = tok("It was")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2
    pair_ids = tok("It was", "the age")["input_ids"]
    assert pair_ids.count(2) == 3 and pair_ids[pair_ids.index(2) + 1] == 2  # <s> A </s></s> B </s>
    # From a single tokenizer.json file path as well.
    from_file = LEDTokenizer.from_pretrained(os.path.join(folders["json"], "tokenizer.json"))
    assert from_file("It was the age")["input_ids"] == tok("It was the age")["input_ids"]


def test_token_conversions(pair: tuple[LEDTokenizer, object]) -> None:
    ours, ref = pair
    ours(TEXTS, padding="max_length", truncation=True, max_length=16)  # leaves no state behind
    for text in TEXTS:
        assert ours.tokenize(text) == ref.tokenize(text)
        ids = ref(text)["input_ids"]
        tokens = ref.convert_ids_to_tokens(ids)
        assert ours.convert_ids_to_tokens(ids) == tokens
        assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == ref.convert_ids_to_tokens(
            ids, skip_special_tokens=True
        )
        assert ours.convert_tokens_to_ids(tokens) == ref.convert_tokens_to_ids(tokens) == ids
        assert ours.convert_tokens_to_string(tokens) == ref.convert_tokens_to_string(tokens)
    assert ours.convert_ids_to_tokens(5) == ref.convert_ids_to_tokens(5)
    assert ours.convert_tokens_to_ids("<mask>") == ref.convert_tokens_to_ids("<mask>")
    assert ours.convert_tokens_to_ids("no-such-token") == ref.convert_tokens_to_ids("no-such-token")
    assert ours.convert_ids_to_tokens(torch.tensor([0, 5, 2])) == ref.convert_ids_to_tokens([0, 5, 2])


# --------------------------------------------------------------------------------------------- encoding
def test_single_inputs(pair: tuple[LEDTokenizer, object]) -> None:
    ours, ref = pair
    for text in TEXTS:
        _call_both(ours, ref, text)
        _call_both(ours, ref, text, add_special_tokens=False)
        _call_both(ours, ref, text, return_tensors="pt")
        _call_both(ours, ref, text, return_attention_mask=False)
        _call_both(ours, ref, text, padding=True, pad_to_multiple_of=16)
    assert ours.encode(TEXTS[0]) == ref.encode(TEXTS[0])
    assert ours.encode(LONG_TEXT, max_length=20) == ref.encode(LONG_TEXT, max_length=20)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"padding": True},
        {"padding": "longest"},
        {"padding": "max_length", "max_length": 40},
        {"padding": "max_length", "max_length": 40, "truncation": True},
        {"padding": True, "pad_to_multiple_of": 16},
        {"padding": "max_length", "max_length": 48, "truncation": True, "pad_to_multiple_of": 16},
        {"truncation": True, "max_length": 12},
        {"max_length": 9},  # max_length alone truncates
        {"truncation": True},  # model_max_length (only in the "config" folder)
        {"padding": "max_length"},  # model_max_length (only in the "config" folder)
        {"padding": True, "max_length": 10},  # max_length ignored (no truncation)
        {"padding": True, "padding_side": "left", "pad_to_multiple_of": 8},
        {"padding": True, "truncation": True, "max_length": 32, "return_tensors": "pt"},
        {"padding": True, "return_tensors": "pt", "pad_to_multiple_of": 16, "return_attention_mask": False},
        {
            "padding": True,
            "return_token_type_ids": True,
            "return_special_tokens_mask": True,
            "return_offsets_mapping": True,
            "return_length": True,
        },
        {"truncation": True, "max_length": 16, "stride": 4, "return_overflowing_tokens": True},
        {"split_special_tokens": True},
    ],
)
def test_batches(pair: tuple[LEDTokenizer, object], kwargs: dict) -> None:
    ours, ref = pair
    _call_both(ours, ref, TEXTS, **kwargs)
    _call_both(ours, ref, TEXTS[:3], **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"padding": True},
        {"truncation": "only_second", "max_length": 24, "padding": "max_length"},
        {"truncation": True, "max_length": 20},
        {"truncation": "longest_first", "max_length": 32, "padding": True, "pad_to_multiple_of": 16},
        {"padding": True, "return_tensors": "pt", "return_token_type_ids": True},
    ],
)
def test_pairs(pair: tuple[LEDTokenizer, object], kwargs: dict) -> None:
    ours, ref = pair
    _call_both(ours, ref, QUESTIONS, CONTEXTS, **kwargs)
    _call_both(ours, ref, QUESTIONS[0], CONTEXTS[0], **kwargs)


def test_targets(pair: tuple[LEDTokenizer, object]) -> None:
    ours, ref = pair
    kwargs = {"padding": True, "truncation": True, "max_length": 32, "pad_to_multiple_of": 16}
    _call_both(ours, ref, TEXTS[:4], text_target=QUESTIONS + [""], **kwargs)
    _call_both(ours, ref, text_target=QUESTIONS, **kwargs)
    _call_both(ours, ref, TEXTS[:3], text_target=QUESTIONS, max_target_length=8, **kwargs)


def test_split_into_words(folders: dict[str, str]) -> None:
    ours = LEDTokenizer.from_pretrained(folders["files"], add_prefix_space=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = transformers.LEDTokenizerFast.from_pretrained(folders["files"], add_prefix_space=True)
    words = [["It", "was", "the", "best"], ["Call", "me", "Ishmael", ".", "Café"]]
    _call_both(ours, ref, words, is_split_into_words=True, padding=True)
    _call_both(ours, ref, words[0], is_split_into_words=True)
    _call_both(ours, ref, TEXTS, padding=True, return_offsets_mapping=True)


def test_errors_match(pair: tuple[LEDTokenizer, object]) -> None:
    ours, ref = pair
    bad = {"padding": True, "truncation": True, "max_length": 20, "pad_to_multiple_of": 16}
    with pytest.raises(ValueError):
        ref(TEXTS, **bad)
    with pytest.raises(ValueError):
        ours(TEXTS, **bad)
    with pytest.raises(ValueError):  # ragged batch to tensors
        ours(TEXTS, return_tensors="pt")
    with pytest.raises(ValueError):
        ours()


# --------------------------------------------------------------------------------------------- decoding
def test_decode(pair: tuple[LEDTokenizer, object]) -> None:
    ours, ref = pair
    batch = ref(TEXTS, padding=True)["input_ids"]
    for ids in batch:
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)
    for skip in (False, True):
        assert ours.batch_decode(batch, skip_special_tokens=skip) == ref.batch_decode(
            batch, skip_special_tokens=skip
        )
        tensor = torch.tensor(batch)
        assert ours.batch_decode(tensor, skip_special_tokens=skip) == ref.batch_decode(
            tensor, skip_special_tokens=skip
        )
        assert ours.decode(tensor[0], skip_special_tokens=skip) == ref.decode(
            tensor[0], skip_special_tokens=skip
        )
    assert ours.decode(batch) == ref.decode(batch)  # a batch given to decode gives a list
    assert ours.decode(5) == ref.decode(5)
    assert ours.decode([]) == ref.decode([]) == ""
    # Byte-level BPE is lossless.
    for text in TEXTS:
        if "<" not in text:
            assert ours.decode(ours(text)["input_ids"], skip_special_tokens=True) == text


def test_clean_up_tokenization_spaces(folders: dict[str, str]) -> None:
    """``None`` (default): never cleaned, as transformers 5 does for BPE. ``True``: the classic cleanup, which
    transformers 5 applies only together with
    ``clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output``."""
    ours = LEDTokenizer.from_pretrained(folders["files"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_default = transformers.LEDTokenizerFast.from_pretrained(folders["files"])
        ref_forced = transformers.LEDTokenizerFast.from_pretrained(
            folders["files"],
            clean_up_tokenization_spaces=True,
            clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output=True,
        )
    ours_forced = LEDTokenizer.from_pretrained(
        folders["files"],
        clean_up_tokenization_spaces=True,
        clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output=True,
    )
    text = "Don't you think it's odd ? We 've seen they 're here ; I 'm sure . Yes , it is !"
    ids = ours(text)["input_ids"]
    assert ours.decode(ids) == ref_default.decode(ids)
    assert ours.decode(ids, clean_up_tokenization_spaces=False) == ref_forced.decode(
        ids, clean_up_tokenization_spaces=False
    )
    cleaned = ours.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
    assert cleaned == ref_forced.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
    assert cleaned != text and "odd?" in cleaned and "We've" in cleaned
    assert ours_forced.batch_decode([ids]) == ref_forced.batch_decode([ids])


# --------------------------------------------------------------------------------------------- LED extras
def test_global_attention_mask(folders: dict[str, str]) -> None:
    tok = LEDTokenizer.from_pretrained(folders["files"])
    enc = tok(TEXTS[:3], padding=True, pad_to_multiple_of=16, return_tensors="pt")
    g = tok.build_global_attention_mask(enc["input_ids"], enc["attention_mask"])
    expected = torch.zeros_like(enc["input_ids"])
    expected[:, 0] = 1
    assert torch.equal(g, expected) and g.dtype == enc["input_ids"].dtype

    # Left padding: the first real token, never a pad.
    left = tok(TEXTS[:3], padding=True, padding_side="left")
    g_left = tok.build_global_attention_mask(left["input_ids"], left["attention_mask"])
    for ids, mask, gl in zip(left["input_ids"], left["attention_mask"], g_left):
        assert sum(gl) == 1 and gl[mask.index(1)] == 1 and ids[mask.index(1)] == tok.bos_token_id

    # QA: <s> + question tokens are global (Longformer's recipe), padding never.
    qa = tok(QUESTIONS, CONTEXTS, padding=True, return_tensors="pt")
    gq = tok.build_global_attention_mask(qa["input_ids"], qa["attention_mask"], mode="question")
    for r, question in enumerate(QUESTIONS):
        n_question = len(tok(question, add_special_tokens=False)["input_ids"])
        assert gq[r, : n_question + 1].tolist() == [1] * (n_question + 1)
        assert gq[r, n_question + 1 :].sum().item() == 0
    # ... and the same through __call__.
    qa2 = tok(QUESTIONS, CONTEXTS, padding=True, return_tensors="pt", global_attention="question")
    assert torch.equal(qa2["global_attention_mask"], gq)
    s2 = tok(TEXTS[:3], padding=True, global_attention="first")
    assert s2["global_attention_mask"] == [[1] + [0] * (len(ids) - 1) for ids in s2["input_ids"]]

    # Explicit token spans, one for all rows or one per row; single sequences stay flat.
    gs = tok.build_global_attention_mask(enc["input_ids"], enc["attention_mask"], spans=(1, 3))
    assert gs[:, 1:3].eq(1).all() and gs.sum().item() == 2 * gs.shape[0]
    per_row = tok.build_global_attention_mask(enc["input_ids"].tolist(), spans=[(0, 1), (2, 4), (0, 0)])
    assert [sum(r) for r in per_row] == [1, 2, 0]
    single = tok("It was the age")["input_ids"]
    assert tok.build_global_attention_mask(single) == [1] + [0] * (len(single) - 1)
    with pytest.raises(ValueError):
        tok.build_global_attention_mask([[5, 6, 7]], mode="question")
    # an attention_mask of another shape is refused (zip would cut the rows short), as are float spans
    for bad_mask in (enc["attention_mask"][:, :2], enc["attention_mask"][:1]):
        with pytest.raises(ValueError, match="attention_mask must have the shape of input_ids"):
            tok.build_global_attention_mask(enc["input_ids"], bad_mask)
    with pytest.raises(TypeError, match="spans must be"):
        tok.build_global_attention_mask(enc["input_ids"][:2], spans=(1.0, 3.0))


def test_pad_matches_and_pads_global_attention(pair: tuple[LEDTokenizer, object]) -> None:
    ours, ref = pair
    features = [dict(ours(t)) for t in TEXTS[:4]]
    for kwargs in (
        {},
        {"pad_to_multiple_of": 16},
        {"padding": "max_length", "max_length": 64},
        {"padding_side": "left"},
        {"return_tensors": "pt"},
    ):
        got = ours.pad([dict(f) for f in features], **kwargs)
        expected = ref.pad([dict(f) for f in features], **kwargs)
        _same(got, expected)

    with_global = [dict(f, global_attention_mask=[1] + [0] * (len(f["input_ids"]) - 1)) for f in features]
    padded = ours.pad(with_global, pad_to_multiple_of=16, return_tensors="pt")
    n = padded["input_ids"].shape[1]
    assert n % 16 == 0
    assert padded["global_attention_mask"].shape == (4, n)
    assert padded["global_attention_mask"][:, 0].eq(1).all() and padded["global_attention_mask"].sum() == 4
    assert padded["global_attention_mask"].mul(1 - padded["attention_mask"]).sum() == 0  # pads are 0
    left = ours.pad(with_global, padding_side="left")
    for g, m in zip(left["global_attention_mask"], left["attention_mask"]):
        assert g[m.index(1)] == 1 and sum(g) == 1


def test_save_pretrained_round_trip(
    pair: tuple[LEDTokenizer, object], tmp_path: pytest.TempPathFactory
) -> None:
    ours, ref = pair
    ours.save_pretrained(tmp_path / "ours")
    assert {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"} <= set(
        os.listdir(tmp_path / "ours")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_reloaded = transformers.LEDTokenizerFast.from_pretrained(tmp_path / "ours")
        auto_reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path / "ours")
    ours_reloaded = LEDTokenizer.from_pretrained(tmp_path / "ours")
    kwargs = {"padding": True, "truncation": True, "max_length": 32, "pad_to_multiple_of": 16}
    expected = ref(TEXTS, **kwargs)
    for tok in (ref_reloaded, auto_reloaded, ours_reloaded):
        _same(tok(TEXTS, **kwargs), expected)
        assert tok.mask_token_id == ref.mask_token_id and tok.model_max_length == ref.model_max_length
    assert ours_reloaded.added_tokens_decoder == ours.added_tokens_decoder

    # And what transformers saves, we load.
    ref.save_pretrained(tmp_path / "ref")
    _same(LEDTokenizer.from_pretrained(tmp_path / "ref")(TEXTS, **kwargs), expected)


def test_no_transformers_import_at_runtime() -> None:
    """The module imports neither transformers nor torch (loaded by file, apart from ``led/__init__``)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "led")
    module_file = os.path.join(path, "tokenization.py")
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('led_tokenization', {module_file!r}); "
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); "
        "assert 'transformers' not in sys.modules, 'transformers imported'; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
