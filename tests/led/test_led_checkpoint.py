"""Hugging Face folders round-trip: ``transformers`` -> ``led`` -> ``transformers`` with equal outputs,
both weight formats, key sets with and without ``led.``, tied and missing keys."""

from __future__ import annotations

import json

import pytest
import torch
from led_testing import assert_close, hf_model, inputs, transformers
from safetensors.torch import load_file, save_file

import led


def _forward(model, ids, mask, glob):
    with torch.no_grad():
        return model(
            ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=ids[:, :6]
        ).logits


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "pytorch_model.bin"])
def test_round_trip_through_led_back_into_transformers(tmp_path, safe):
    hf = hf_model()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=safe)
    ours = led.LEDForConditionalGeneration.from_pretrained(tmp_path / "hf")
    ours.save_pretrained(tmp_path / "ours", safe_serialization=safe)
    weights = "model.safetensors" if safe else "pytorch_model.bin"
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == sorted(
        ["config.json", "generation_config.json", weights]
    )
    back = transformers.LEDForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    ids, mask, glob = inputs(globals_="scattered")
    expected = _forward(hf, ids, mask, glob)
    assert_close(_forward(ours, ids, mask, glob), expected)
    assert torch.equal(_forward(back, ids, mask, glob), expected)  # the very same weights
    for name, tensor in hf.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    # generation settings survive too
    assert back.generation_config.decoder_start_token_id == hf.generation_config.decoder_start_token_id


def test_saved_keys_are_transformers_keys(tmp_path):
    hf = hf_model()
    hf.save_pretrained(tmp_path / "hf")
    ours = led.LEDForConditionalGeneration.from_pretrained(tmp_path / "hf")
    ours.save_pretrained(tmp_path / "ours")
    theirs = load_file(tmp_path / "hf" / "model.safetensors")
    mine = load_file(tmp_path / "ours" / "model.safetensors")
    assert set(mine) == set(theirs)  # tied copies dropped the same way, final_logits_bias kept
    assert "led.shared.weight" in mine and "lm_head.weight" not in mine
    assert "led.encoder.embed_tokens.weight" not in mine and "final_logits_bias" in mine


def test_tied_weights_are_one_tensor(tmp_path):
    hf = hf_model()
    hf.save_pretrained(tmp_path)
    ours = led.LEDForConditionalGeneration.from_pretrained(tmp_path)
    shared = ours.led.shared.weight
    assert ours.lm_head.weight is shared
    assert ours.led.encoder.embed_tokens.weight is shared and ours.led.decoder.embed_tokens.weight is shared


def test_all_tied_copies_and_no_final_logits_bias(tmp_path):
    # an old-style pytorch_model.bin listing every tied copy, from a model whose bias was never saved
    hf = hf_model()
    state = {k: v.clone() for k, v in hf.state_dict().items() if k != "final_logits_bias"}
    assert "lm_head.weight" in state and "led.decoder.embed_tokens.weight" in state
    torch.save(state, tmp_path / "pytorch_model.bin")
    hf.config.save_pretrained(tmp_path)
    ours = led.LEDForConditionalGeneration.from_pretrained(tmp_path, strict=True)
    assert torch.count_nonzero(ours.final_logits_bias) == 0
    with torch.no_grad():
        hf.final_logits_bias.zero_()
    ids, mask, glob = inputs()
    assert_close(_forward(ours, ids, mask, glob), _forward(hf, ids, mask, glob))


def test_keys_without_led_prefix_load_into_heads(tmp_path):
    base = hf_model("LEDModel")
    base.save_pretrained(tmp_path)
    assert not any(k.startswith("led.") for k in load_file(tmp_path / "model.safetensors"))
    ours = led.LEDForConditionalGeneration.from_pretrained(tmp_path, strict=True)  # lm_head tied, bias zero
    ids, mask, glob = inputs()
    with torch.no_grad():
        expected = base(ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=ids[:, :6])
        got = ours.led(ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=ids[:, :6])
    assert_close(got.last_hidden_state, expected.last_hidden_state)


def test_head_checkpoint_loads_into_base_model(tmp_path):
    hf = hf_model()
    hf.save_pretrained(tmp_path)
    ours = led.LEDModel.from_pretrained(tmp_path, strict=True)
    ids, mask, glob = inputs()
    with torch.no_grad():
        expected = hf.led(ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=ids[:, :6])
        got = ours(ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=ids[:, :6])
    assert_close(got.last_hidden_state, expected.last_hidden_state)


def test_classification_weights_with_4x_names(tmp_path):
    # transformers 4.x saved LEDForSequenceClassification under these names; 5.x cannot build the class
    base = hf_model("LEDModel")
    state = {f"led.{k}": v for k, v in base.state_dict().items() if "embed_tokens" not in k}
    gen = torch.Generator().manual_seed(3)
    head = {
        "classification_head.dense.weight": torch.randn(32, 32, generator=gen),
        "classification_head.dense.bias": torch.randn(32, generator=gen),
        "classification_head.out_proj.weight": torch.randn(4, 32, generator=gen),
        "classification_head.out_proj.bias": torch.randn(4, generator=gen),
    }
    save_file({**state, **head}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    config = base.config.to_dict()
    config.update(
        architectures=["LEDForSequenceClassification"], id2label={str(i): f"c{i}" for i in range(4)}
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    ours = led.LEDForSequenceClassification.from_pretrained(tmp_path, strict=True)
    assert ours.config.num_labels == 4
    assert torch.equal(ours.classification_head.out_proj.weight, head["classification_head.out_proj.weight"])
    ours.save_pretrained(tmp_path / "again")
    saved = load_file(tmp_path / "again" / "model.safetensors")
    assert set(saved) == set(state) | set(head)


def test_strict_loading_reports_missing_and_unexpected(tmp_path):
    hf = hf_model()
    state = {k: v for k, v in hf.state_dict().items() if "layers.1.fc1" not in k}
    state["led.encoder.something_else"] = torch.zeros(1)
    save_file(
        {k: v.contiguous() for k, v in state.items() if k != "lm_head.weight" and "embed_tokens" not in k},
        tmp_path / "model.safetensors",
        metadata={"format": "pt"},
    )
    hf.config.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="fc1"):
        led.LEDForConditionalGeneration.from_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="something_else"):
        led.LEDForConditionalGeneration.from_pretrained(tmp_path, strict=True)
    hf.config.save_pretrained(tmp_path / "config_only")
    with pytest.raises(FileNotFoundError, match="no weights"):
        led.LEDForConditionalGeneration.from_pretrained(tmp_path / "config_only")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        led.LEDForConditionalGeneration.from_pretrained(tmp_path / "nowhere")


def test_dtype_and_backend_options(tmp_path):
    hf_model().save_pretrained(tmp_path)
    ours = led.LEDForConditionalGeneration.from_pretrained(tmp_path, "torch", dtype=torch.bfloat16)
    assert ours.dtype == torch.bfloat16 and ours.config.attn_backend == "torch"
    assert ours.final_logits_bias.dtype == torch.bfloat16
    ids, mask, glob = inputs()
    assert torch.isfinite(_forward(ours, ids, mask, glob).float()).all()


def test_dtype_by_name_and_bad_dtype_or_device(tmp_path):
    """dtype as transformers takes it (a name, with or without "torch."); a dtype that is not a
    floating one, or a device that is not one, is refused by name before the weights are read."""
    hf_model().save_pretrained(tmp_path)
    load = led.LEDForConditionalGeneration.from_pretrained
    for name, want in (
        ("bfloat16", torch.bfloat16),
        ("torch.float16", torch.float16),
        ("auto", torch.float32),
    ):
        assert load(tmp_path, dtype=name).dtype == want
    bad = [
        ({"dtype": "float17"}, ValueError, "dtype must name a torch floating dtype"),
        ({"dtype": "Tensor"}, ValueError, "dtype must name a torch floating dtype"),
        ({"dtype": torch.int8}, ValueError, "dtype must be a floating dtype"),
        ({"dtype": "int64"}, ValueError, "dtype must be a floating dtype"),
        ({"dtype": 16}, TypeError, "dtype must be a torch.dtype"),
        ({"device": "gpu0"}, ValueError, "device must be a torch.device or a device string"),
        ({"device": 1.5}, ValueError, "device must be a torch.device or a device string"),
    ]
    for kwargs, error, match in bad:
        with pytest.raises(error, match=match):
            load(tmp_path, **kwargs)


def test_untied_embeddings_follow_transformers(tmp_path):
    # tie_word_embeddings=False: transformers 5 keeps shared, both embed_tokens and lm_head apart
    hf = hf_model(tie_word_embeddings=False)
    hf.save_pretrained(tmp_path / "hf")
    ours = led.LEDForConditionalGeneration.from_pretrained(tmp_path / "hf", strict=True)
    assert ours.lm_head.weight is not ours.led.shared.weight
    assert ours.led.encoder.embed_tokens.weight is not ours.led.shared.weight
    ids, mask, glob = inputs()
    assert_close(_forward(ours, ids, mask, glob), _forward(hf, ids, mask, glob))
    ours.save_pretrained(tmp_path / "ours")
    mine = load_file(tmp_path / "ours" / "model.safetensors")
    assert set(mine) == set(load_file(tmp_path / "hf" / "model.safetensors"))
    # a 4.x-style untied file stores the encoder/decoder embeddings only as `shared`
    del mine["led.encoder.embed_tokens.weight"], mine["led.decoder.embed_tokens.weight"]
    save_file(mine, tmp_path / "ours" / "model.safetensors", metadata={"format": "pt"})
    again = led.LEDForConditionalGeneration.from_pretrained(tmp_path / "ours", strict=True)
    assert torch.equal(again.led.encoder.embed_tokens.weight, again.led.shared.weight)
