"""``led.LEDConfig`` has Hugging Face's fields and defaults, and reads/writes its ``config.json``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from led_testing import hf_config, transformers

import led
from led.configuration import _LED_FIELDS


def test_defaults_equal_transformers():
    ours, theirs = led.LEDConfig(), transformers.LEDConfig()
    for name in _LED_FIELDS:
        expected = getattr(theirs, name)
        if name == "attention_window" and isinstance(expected, int):
            expected = [expected] * theirs.encoder_layers  # transformers expands it when building the model
        assert getattr(ours, name) == expected, name
    assert ours.attn_backend == "auto" and ours.pad_to_window_size is False
    assert ours.num_labels == theirs.num_labels == 2
    for alias in ("hidden_size", "num_attention_heads", "num_hidden_layers", "initializer_range"):
        assert getattr(ours, alias) == getattr(theirs, alias), alias


def test_reads_transformers_config_json(tmp_path):
    theirs = hf_config(num_labels=3, dropout=0.05, attention_window=[4, 6])
    theirs.save_pretrained(tmp_path)
    ours = led.LEDConfig.from_pretrained(tmp_path)
    for name in _LED_FIELDS:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.num_labels == 3 and ours.id2label == theirs.id2label
    assert ours.transformers_version == transformers.__version__  # unknown keys read as attributes


def test_written_config_json_reads_in_transformers_and_round_trips(tmp_path):
    ours = led.LEDConfig(
        vocab_size=77,
        d_model=48,
        encoder_layers=3,
        attention_window=10,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        id2label={0: "neg", 1: "neu", 2: "pos"},
        attn_backend="torch",
        pad_to_window_size=True,
        num_beams=4,
        some_legacy_flag=True,
    )
    ours.save_pretrained(tmp_path)
    theirs = transformers.LEDConfig.from_pretrained(tmp_path)
    for name in _LED_FIELDS:
        assert getattr(theirs, name) == getattr(ours, name), name
    assert theirs.id2label == ours.id2label and theirs.num_labels == 3
    again = led.LEDConfig.from_pretrained(tmp_path)
    assert again == ours
    assert again.attn_backend == "torch" and again.pad_to_window_size is True
    assert again.extra["num_beams"] == 4 and again.some_legacy_flag is True
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "led" and data["attention_window"] == [10, 10, 10]


def test_hf_alias_names_are_accepted():
    cfg = led.LEDConfig(hidden_size=64, num_attention_heads=4, decoder_attention_heads=4, num_hidden_layers=3)
    assert (cfg.d_model, cfg.encoder_attention_heads, cfg.encoder_layers) == (64, 4, 3)
    assert len(cfg.attention_window) == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"attention_window": 7}, "even"),
        ({"attention_window": [8, 8], "encoder_layers": 3}, "one value per layer"),
        ({"attn_backend": "nope"}, "attn_backend"),
        ({"d_model": 30, "encoder_attention_heads": 4}, "divisible"),
        ({"encoder_attention_heads": 0}, "encoder_attention_heads must be positive"),
        ({"d_model": 0}, "d_model must be positive"),
        ({"vocab_size": 0}, "vocab_size must be positive"),
        ({"vocab_size": 10, "pad_token_id": 10}, r"pad_token_id must be in \[0, vocab_size=10\)"),
    ],
)
def test_invalid_configs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        led.LEDConfig(**kwargs)


@pytest.mark.parametrize("window", ["64", 8.0, [8.7, 8], None, True, [8, "8"]], ids=repr)
def test_attention_window_must_be_ints(window):
    """A string is not a list of digits, a float is not cut to an int: a TypeError naming the field."""
    with pytest.raises(TypeError, match="attention_window"):
        led.LEDConfig(attention_window=window, encoder_layers=2)


def test_attention_window_accepts_numpy_ints():
    assert led.LEDConfig(attention_window=np.int64(8), encoder_layers=2).attention_window == [8, 8]
    assert led.LEDConfig(attention_window=(np.int32(4), 8), encoder_layers=2).attention_window == [4, 8]


def test_not_an_led_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bart"}))
    with pytest.raises(ValueError, match="not an LED config"):
        led.LEDConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "text,error,match",
    [
        ("[1, 2]", TypeError, "expected a JSON object of config fields, got list"),
        ("{not json", ValueError, "not valid JSON"),
        (b"\xff\xfe{", ValueError, "not valid JSON"),
        ('{"d_model": "big"}', TypeError, "d_model must be an int"),
        ('{"model_type": "bart"}', ValueError, "not an LED config"),
    ],
    ids=["list", "not-json", "not-utf8", "bad-field", "bart"],
)
def test_bad_config_files_are_named(tmp_path, text, error, match):
    """A config.json that is not a JSON object of valid LED fields: the error names the file."""
    path = tmp_path / "config.json"
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    with pytest.raises(error, match=match) as info:
        led.LEDConfig.from_pretrained(tmp_path)
    assert str(tmp_path / "config.json") in str(info.value)


def test_bad_override_is_named_as_one(tmp_path):
    led.LEDConfig(encoder_layers=2).save_pretrained(tmp_path)
    with pytest.raises(
        TypeError, match=r"config.json \(or the overrides attention_window\): attention_window"
    ):
        led.LEDConfig.from_pretrained(tmp_path, attention_window="8")
