"""``generate`` is token-for-token equal to ``transformers`` on the same weights: greedy and beam search
with the length, n-gram, early-stopping and special-token options, and the encoder's global mask."""

from __future__ import annotations

import pytest
import torch
from led_testing import hf_model, inputs

import led


def _pair(tmp_path, eos_bias: float = 0.0, **overrides):
    hf = hf_model("LEDForConditionalGeneration", **overrides)
    with torch.no_grad():  # make </s> likely enough that some hypotheses end early
        hf.final_logits_bias[0, hf.config.eos_token_id] += eos_bias
    hf.save_pretrained(tmp_path)
    return hf, led.LEDForConditionalGeneration.from_pretrained(tmp_path)


def _compare(hf, ours, model_inputs, **gen_kwargs):
    expected = hf.generate(**model_inputs, **gen_kwargs)
    got = ours.generate(**model_inputs, **gen_kwargs)
    assert got.dtype == torch.long
    assert got.tolist() == expected.tolist(), f"{gen_kwargs}\nours {got.tolist()}\nhf   {expected.tolist()}"
    return got


def _model_inputs(globals_="first", padding="tail", batch=3, n=40):
    ids, mask, glob = inputs(batch=batch, n=n, globals_=globals_, padding=padding)
    out = {"input_ids": ids, "attention_mask": mask}
    if glob is not None:
        out["global_attention_mask"] = glob
    return out


@pytest.mark.parametrize(
    "gen_kwargs",
    [
        {},  # 20 new tokens by default
        {"max_new_tokens": 12},
        {"max_length": 9, "no_repeat_ngram_size": 2},
        {"max_new_tokens": 14, "min_length": 10},
        {"max_new_tokens": 10, "use_cache": False},
        {"max_new_tokens": 10, "decoder_start_token_id": 0, "eos_token_id": [2, 7]},
        {"max_new_tokens": 10, "forced_bos_token_id": 0, "forced_eos_token_id": 2},
    ],
    ids=str,
)
def test_greedy_matches_transformers(tmp_path, gen_kwargs):
    hf, ours = _pair(tmp_path, eos_bias=3.0)
    _compare(hf, ours, _model_inputs(), **gen_kwargs)


@pytest.mark.parametrize("globals_", ["none", "scattered"])
def test_greedy_global_attention_mask_passes_through(tmp_path, globals_):
    hf, ours = _pair(tmp_path, eos_bias=3.0)
    _compare(hf, ours, _model_inputs(globals_=globals_), max_new_tokens=10)


def test_greedy_with_a_decoder_prompt(tmp_path):
    hf, ours = _pair(tmp_path, eos_bias=3.0)
    prompt = torch.tensor([[2, 17, 33], [2, 40, 41], [2, 5, 6]])
    _compare(hf, ours, _model_inputs(), decoder_input_ids=prompt, max_new_tokens=8)


@pytest.mark.parametrize(
    "gen_kwargs",
    [
        {"num_beams": 3, "max_new_tokens": 12},
        {"num_beams": 4, "max_new_tokens": 12, "num_return_sequences": 3, "no_repeat_ngram_size": 2},
        {"num_beams": 3, "max_new_tokens": 12, "length_penalty": 2.0, "early_stopping": True},
        {"num_beams": 3, "max_new_tokens": 12, "length_penalty": 0.5, "early_stopping": "never"},
        {"num_beams": 3, "max_new_tokens": 12, "length_penalty": -1.0, "min_length": 6},
        {"num_beams": 2, "max_length": 10, "use_cache": False},
        {"num_beams": 3, "max_new_tokens": 9, "eos_token_id": [2, 9], "pad_token_id": 1},
    ],
    ids=str,
)
def test_beam_search_matches_transformers(tmp_path, gen_kwargs):
    hf, ours = _pair(tmp_path, eos_bias=5.0)
    _compare(hf, ours, _model_inputs(), **gen_kwargs)


def test_beam_scores_match_transformers(tmp_path):
    hf, ours = _pair(tmp_path, eos_bias=5.0)
    model_inputs = _model_inputs(globals_="scattered")
    kwargs = dict(num_beams=3, max_new_tokens=10, num_return_sequences=2, length_penalty=1.5)
    expected = hf.generate(**model_inputs, **kwargs, return_dict_in_generate=True, output_scores=True)
    got = ours.generate(**model_inputs, **kwargs, return_dict_in_generate=True)
    assert got.sequences.tolist() == expected.sequences.tolist()
    torch.testing.assert_close(got.sequences_scores, expected.sequences_scores, atol=1e-4, rtol=1e-4)


def test_generation_defaults_from_legacy_config_json(tmp_path):
    # a 4.x-style folder: generation settings in config.json, no generation_config.json
    hf, _ = _pair(tmp_path, eos_bias=5.0)
    (tmp_path / "generation_config.json").unlink()
    import json

    data = json.loads((tmp_path / "config.json").read_text())
    data.update(num_beams=3, max_length=11, no_repeat_ngram_size=2, length_penalty=2.0)
    (tmp_path / "config.json").write_text(json.dumps(data))
    hf = type(hf).from_pretrained(tmp_path)
    ours = led.LEDForConditionalGeneration.from_pretrained(tmp_path)
    assert ours.generation_config["num_beams"] == 3
    _compare(hf, ours, _model_inputs())


def test_unsupported_requests_raise(tmp_path):
    _, ours = _pair(tmp_path)
    model_inputs = _model_inputs()
    with pytest.raises(NotImplementedError, match="sampling"):
        ours.generate(**model_inputs, do_sample=True)
    with pytest.raises(ValueError, match="num_beams > 1"):
        ours.generate(**model_inputs, num_return_sequences=2)
    with pytest.raises(ValueError, match="max_length"):
        ours.generate(**model_inputs, max_length=1)
    # settings that would fail deep inside (a reshape of 0 rows, a division by zero, an index past the
    # vocabulary) or give NaN scores
    bad = [
        ({"num_beams": 0}, "num_beams must be an int >= 1"),
        ({"num_beams": 2.5}, "num_beams must be an int >= 1"),
        ({"num_beams": 2, "num_return_sequences": 0}, "num_return_sequences must be an int >= 1"),
        ({"num_beams": 2, "length_penalty": float("nan")}, "length_penalty must be a finite number"),
        ({"forced_bos_token_id": 999}, r"forced_bos_token_id must be a token id in \[0, vocab_size=100\)"),
        ({"decoder_start_token_id": -1}, "decoder_start_token_id must be a token id"),
        ({"decoder_input_ids": torch.zeros(3, 0, dtype=torch.long)}, "decoder_input_ids must be"),
        ({"decoder_input_ids": torch.zeros(1, 2, dtype=torch.long)}, r"B = 3 \(the inputs' batch\)"),
        # lengths that were taken as "off" or read as another length
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1, got 0"),
        ({"min_length": -5}, "min_length must be >= 0, got -5"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size must be >= 0, got -1"),
        ({"early_stopping": "sometimes"}, "early_stopping must be True, False or 'never'"),
    ]
    for kwargs, match in bad:
        with pytest.raises(ValueError, match=match):
            ours.generate(**model_inputs, **kwargs)
    # a float was cut to an int, a string failed deep inside
    for kwargs, match in (
        ({"max_new_tokens": 2.5}, "max_new_tokens must be an int or None, got float 2.5"),
        ({"min_new_tokens": "3"}, "min_new_tokens must be an int or None, got str '3'"),
    ):
        with pytest.raises(TypeError, match=match):
            ours.generate(**model_inputs, **kwargs)
