"""``led`` models equal ``transformers`` LED on the same weights (fp32, 1e-4): logits, loss, encoder and
decoder states, attention weights, gradients; padding-invariance; heads; training behaviour.

Each test builds a tiny random Hugging Face model, saves it, and loads the folder with ``led``.
"""

from __future__ import annotations

import pytest
import torch
from led_testing import assert_close, hf_model, inputs, transformers

import led
import led_kernels as lk
from led.outputs import LEDSeq2SeqLMOutput

CPU_BACKENDS = [n for n, s in lk.available_backends().items() if s.available and n != "cuda"]


def _pair(tmp_path, cls_name="LEDForConditionalGeneration", **overrides):
    hf = hf_model(cls_name, **overrides)
    hf.save_pretrained(tmp_path)
    ours = getattr(led, cls_name).from_pretrained(tmp_path)
    return hf, ours


def _labels(batch=2, length=9):
    labels = torch.randint(3, 100, (batch, length), generator=torch.Generator().manual_seed(5))
    labels[-1, length - 3 :] = -100
    return labels


def _real(mask):
    return mask.bool()


@pytest.mark.parametrize("pad_to_window", [False, True], ids=["nopad", "hfpad"])
@pytest.mark.parametrize("padding", ["none", "tail"])
@pytest.mark.parametrize("globals_", ["none", "first", "scattered", "question"])
def test_conditional_generation_matches_transformers(tmp_path, globals_, padding, pad_to_window):
    hf, ours = _pair(tmp_path)
    ids, mask, glob = inputs(globals_=globals_, padding=padding, n=45)
    labels = _labels()
    kwargs = dict(input_ids=ids, attention_mask=mask, global_attention_mask=glob, labels=labels)
    with torch.no_grad():
        expected = hf(**kwargs, output_hidden_states=True)
        got = ours(**kwargs, output_hidden_states=True, pad_to_window_size=pad_to_window)
    assert isinstance(got, LEDSeq2SeqLMOutput)
    assert_close(got.logits, expected.logits, msg="logits")
    assert_close(got.loss, expected.loss, msg="loss")
    assert_close(got.encoder_last_hidden_state, expected.encoder_last_hidden_state, msg="encoder state")
    for i, (a, b) in enumerate(zip(got.encoder_hidden_states, expected.encoder_hidden_states, strict=True)):
        assert_close(a, b, msg=f"encoder hidden state {i}")
    for i, (a, b) in enumerate(zip(got.decoder_hidden_states, expected.decoder_hidden_states, strict=True)):
        assert_close(a, b, msg=f"decoder hidden state {i}")


def test_padding_to_window_changes_nothing_for_real_tokens(tmp_path):
    _, ours = _pair(tmp_path, attention_window=[16, 32])
    ids, mask, glob = inputs(globals_="scattered", padding="tail", n=70)
    with torch.no_grad():
        plain = ours(ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=ids[:, :6])
        padded = ours(
            ids,
            attention_mask=mask,
            global_attention_mask=glob,
            decoder_input_ids=ids[:, :6],
            pad_to_window_size=True,
        )
    real = _real(mask)
    assert_close(plain.encoder_last_hidden_state[real], padded.encoder_last_hidden_state[real], tol=1e-5)
    assert_close(plain.logits, padded.logits)


def test_output_attentions_match_transformers(tmp_path):
    hf, ours = _pair(tmp_path)
    ids, mask, glob = inputs(globals_="scattered", padding="tail", n=45)
    dec = ids[:, :7]
    with torch.no_grad():
        expected = hf(
            ids,
            attention_mask=mask,
            global_attention_mask=glob,
            decoder_input_ids=dec,
            output_attentions=True,
        )
        got = ours(
            ids,
            attention_mask=mask,
            global_attention_mask=glob,
            decoder_input_ids=dec,
            output_attentions=True,
        )
    real = _real(mask)
    # HF's global slots beyond a row's count hold a meaningless uniform distribution; ours are 0
    merged = glob.bool() & real
    slot_valid = torch.arange(merged.sum(1).max())[None] < merged.sum(1)[:, None]  # (B, G)
    for a, b in zip(got.encoder_attentions, expected.encoder_attentions, strict=True):
        assert a.shape == b.shape
        assert_close(a.transpose(1, 2)[real], b.transpose(1, 2)[real], msg="local attention weights")
    for a, b in zip(got.encoder_global_attentions, expected.encoder_global_attentions, strict=True):
        b = b[:, :, : a.shape[2]]  # HF keeps its window padding here
        assert_close(
            a.permute(0, 3, 1, 2)[slot_valid], b.permute(0, 3, 1, 2)[slot_valid], msg="global weights"
        )
        assert (a.permute(0, 3, 1, 2)[~slot_valid] == 0).all()
    for name in ("decoder_attentions", "cross_attentions"):
        for a, b in zip(getattr(got, name), getattr(expected, name), strict=True):
            assert_close(a, b, msg=name)
    # the encoder's weights are only reported: its states are the kernels' either way (the decoder
    # switches from SDPA to an explicit softmax to return its weights, so its logits move by rounding)
    with torch.no_grad():
        plain = ours(ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=dec)
    assert torch.equal(plain.encoder_last_hidden_state, got.encoder_last_hidden_state)
    assert_close(plain.logits, got.logits, tol=1e-5)
    assert got.encoder_global_attentions is not None
    with torch.no_grad():
        no_glob = ours(ids, attention_mask=mask, decoder_input_ids=dec, output_attentions=True)
    assert no_glob.encoder_global_attentions is None and len(no_glob.encoder_attentions) == 2


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradients_match_transformers(tmp_path, backend):
    # triton: the layer op (kernels A and B in one autograd Function, query_global's G rows placed)
    hf, ours = _pair(tmp_path, dropout=0.0)
    ours.config.attn_backend = backend
    ids, mask, glob = inputs(globals_="scattered", padding="tail", n=40)
    kwargs = dict(input_ids=ids, attention_mask=mask, global_attention_mask=glob, labels=_labels())
    hf(**kwargs).loss.backward()
    ours(**kwargs).loss.backward()
    theirs = dict(hf.named_parameters())
    scale = max(p.grad.abs().max() for p in theirs.values())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs[name].grad, atol=1e-4 * scale, rtol=1e-3, msg=name)


def test_global_projections_get_gradients_without_global_tokens(tmp_path):
    # DDP with find_unused_parameters=False needs every parameter in the graph
    _, ours = _pair(tmp_path)
    ids, mask, _ = inputs(globals_="none")
    ours.train()
    ours(ids, attention_mask=mask, labels=_labels()).loss.backward()
    unused = [n for n, p in ours.named_parameters() if p.grad is None]
    assert unused == []
    attn = ours.led.encoder.layers[0].self_attn.longformer_self_attn
    assert torch.count_nonzero(attn.query_global.weight.grad) == 0


def test_base_model_and_shifted_inputs_match_transformers(tmp_path):
    hf, ours = _pair(tmp_path, "LEDModel")
    ids, mask, glob = inputs(globals_="first", n=30)
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, global_attention_mask=glob)  # decoder gets ids shifted right
        got = ours(ids, attention_mask=mask, global_attention_mask=glob)
    assert_close(got.last_hidden_state, expected.last_hidden_state)
    assert_close(got.encoder_last_hidden_state, expected.encoder_last_hidden_state)


def test_question_answering_matches_transformers(tmp_path):
    hf, ours = _pair(tmp_path, "LEDForQuestionAnswering")
    ids, mask, glob = inputs(globals_="question", n=40)
    dec = ids[:, :12]
    start, end = torch.tensor([3, 50]), torch.tensor([[7], [9]])  # 50: outside, ignored
    kwargs = dict(attention_mask=mask, global_attention_mask=glob, decoder_input_ids=dec)
    with torch.no_grad():
        expected = hf(ids, **kwargs, start_positions=start, end_positions=end)
        got = ours(ids, **kwargs, start_positions=start, end_positions=end)
    assert_close(got.start_logits, expected.start_logits)
    assert_close(got.end_logits, expected.end_logits)
    assert_close(got.loss, expected.loss)
    assert ours.config.num_labels == 2


def _hf_classification_reference(hf_base, head_state, config, ids, mask, glob):
    """transformers 4.x's LEDForSequenceClassification.forward, on transformers 5's pieces."""
    from transformers.models.led.modeling_led import LEDClassificationHead

    head = LEDClassificationHead(config.d_model, config.d_model, config.num_labels, config.classifier_dropout)
    head.load_state_dict(head_state)
    hidden = hf_base(ids, attention_mask=mask, global_attention_mask=glob).last_hidden_state
    eos = ids.eq(config.eos_token_id)
    pooled = hidden[eos, :].view(hidden.size(0), -1, hidden.size(-1))[:, -1, :]
    return head.eval()(pooled)


def test_sequence_classification_matches_transformers_4x_logic(tmp_path):
    hf_base = hf_model("LEDModel")
    hf_base.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="classification_head"):  # a new head, as HF warns too
        ours = led.LEDForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    assert set(ours.classification_head.state_dict()) == {
        "dense.weight",
        "dense.bias",
        "out_proj.weight",
        "out_proj.bias",
    }
    ids, mask, glob = inputs(globals_="first", n=30, padding="none")
    ids[:, 10] = 2  # two </s> per row: pooled at the last one
    ids[:, -1] = 2
    labels = torch.tensor([0, 2])
    with torch.no_grad():
        got = ours(ids, attention_mask=mask, global_attention_mask=glob, labels=labels)
        expected = _hf_classification_reference(
            hf_base, ours.classification_head.state_dict(), ours.config, ids, mask, glob
        )
    assert_close(got.logits, expected)
    assert_close(got.loss, torch.nn.functional.cross_entropy(expected, labels))
    bad = ids.clone()
    bad[0, 5] = 2
    with pytest.raises(ValueError, match="same number of <eos>"):
        ours(bad, attention_mask=mask)


def test_incremental_decoding_with_cache_equals_full_forward(tmp_path):
    _, ours = _pair(tmp_path)
    ids, mask, glob = inputs(globals_="first")
    dec = torch.randint(3, 100, (2, 9))
    with torch.no_grad():
        full = ours(
            ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=dec, use_cache=False
        )
        first = ours(
            ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=dec[:, :5], use_cache=True
        )
        enc = (first.encoder_last_hidden_state,)
        logits, past = [first.logits], first.past_key_values
        for t in range(5, 9):
            step = ours(
                encoder_outputs=enc,
                attention_mask=mask,
                decoder_input_ids=dec[:, t : t + 1],
                past_key_values=past,
            )
            logits.append(step.logits)
            past = step.past_key_values
    assert full.past_key_values is None
    assert len(past) == 2 and all(len(layer) == 4 and layer[0].shape == (2, 2, 9, 16) for layer in past)
    assert_close(torch.cat(logits, dim=1), full.logits)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_every_cpu_backend_gives_the_same_logits(tmp_path, backend):
    # tiny fp32 shapes so the Triton interpreter (when present) stays fast
    hf, _ = _pair(tmp_path)
    ours = led.LEDForConditionalGeneration.from_pretrained(tmp_path, attn_backend=backend)
    assert ours.config.attn_backend == backend
    ids, mask, glob = inputs(globals_="scattered", padding="tail", n=24)
    with torch.no_grad():
        expected = hf(
            ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=ids[:, :5]
        ).logits
        got = ours(ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=ids[:, :5]).logits
    assert_close(got, expected)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tmp_path, backend):
    _, ours = _pair(tmp_path, dropout=0.0)
    ours.config.attn_backend = backend
    ids, mask, glob = inputs(globals_="scattered", padding="tail", n=24)
    kwargs = dict(input_ids=ids, attention_mask=mask, global_attention_mask=glob, labels=_labels())
    ours.train()
    loss = ours(**kwargs).loss
    grads = torch.autograd.grad(loss, list(ours.parameters()))
    ours.gradient_checkpointing_enable()
    assert ours.is_gradient_checkpointing
    loss_ckpt = ours(**kwargs).loss
    grads_ckpt = torch.autograd.grad(loss_ckpt, list(ours.parameters()))
    assert_close(loss_ckpt, loss, tol=1e-6)
    for a, b in zip(grads_ckpt, grads, strict=True):
        assert_close(a, b, tol=1e-5)
    out = ours(ids, attention_mask=mask, decoder_input_ids=ids[:, :4], use_cache=True)
    assert out.past_key_values is None  # no cache while recomputing in training, as in HF


def test_dropout_follows_train_and_eval(tmp_path):
    _, ours = _pair(tmp_path, dropout=0.3)
    ids, mask, glob = inputs(globals_="first")
    kwargs = dict(
        input_ids=ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=ids[:, :5]
    )
    assert not ours.training  # from_pretrained returns eval mode, as in HF
    with torch.no_grad():
        a, b = ours(**kwargs).logits, ours(**kwargs).logits
        assert torch.equal(a, b)
        ours.train()
        c, d = ours(**kwargs).logits, ours(**kwargs).logits
    assert not torch.equal(c, d) and not torch.equal(a, c)


def test_return_dict_false_gives_hf_tuple_order(tmp_path):
    _, ours = _pair(tmp_path)
    ids, mask, glob = inputs()
    with torch.no_grad():
        out = ours(ids, attention_mask=mask, global_attention_mask=glob, labels=_labels(), return_dict=False)
        as_dict = ours(ids, attention_mask=mask, global_attention_mask=glob, labels=_labels())
    assert isinstance(out, tuple)
    assert torch.equal(out[0], as_dict.loss) and torch.equal(out[1], as_dict.logits)
    assert torch.equal(as_dict["logits"], as_dict[1]) and "loss" in as_dict.keys()


def test_inputs_embeds_and_max_global(tmp_path):
    _, ours = _pair(tmp_path)
    ids, mask, glob = inputs(globals_="scattered")
    dec = ids[:, :5]
    with torch.no_grad():
        ref = ours(ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=dec).logits
        embeds = ours.get_input_embeddings()(ids)
        via_embeds = ours(
            inputs_embeds=embeds, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=dec
        )
        fixed_slots = ours(
            ids, attention_mask=mask, global_attention_mask=glob, decoder_input_ids=dec, max_global=16
        )
    assert torch.equal(via_embeds.logits, ref)
    assert_close(fixed_slots.logits, ref)  # more (empty) global slots: same maths, other summation order


def test_too_long_inputs_raise_clearly(tmp_path):
    _, ours = _pair(tmp_path)
    with pytest.raises(ValueError, match="position embeddings"):
        ours(torch.ones(1, 300, dtype=torch.long), decoder_input_ids=torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="position embeddings"):  # LEDModel shifts input_ids into the decoder
        ours(torch.ones(1, 100, dtype=torch.long))


def test_transformers_module_names_are_ours(tmp_path):
    hf, ours = _pair(tmp_path)
    assert list(ours.state_dict()) == list(hf.state_dict())
    for cls_name in ("LEDModel", "LEDForQuestionAnswering"):
        hf_keys = set(getattr(transformers, cls_name)(hf.config).state_dict())
        assert (
            set(getattr(led, cls_name)(led.LEDConfig.from_dict(hf.config.to_dict())).state_dict()) == hf_keys
        )


def test_decoder_attention_mask_matches_transformers(tmp_path):
    hf, ours = _pair(tmp_path)
    ids, mask, glob = inputs(globals_="first")
    dec = ids[:, :9]
    dec_mask = torch.ones_like(dec)
    dec_mask[-1, 6:] = 0  # right-padded targets
    kwargs = dict(
        attention_mask=mask,
        global_attention_mask=glob,
        decoder_input_ids=dec,
        decoder_attention_mask=dec_mask,
    )
    with torch.no_grad():
        expected = hf(ids, **kwargs).logits
        got = ours(ids, **kwargs).logits
        assert_close(got, expected)
        # a mask longer than the targets: its first columns are read, as transformers reads them
        longer = torch.cat([dec_mask, torch.zeros_like(dec_mask[:, :3])], 1)
        longer[0, 0] = 0  # (read: it changes the logits)
        kwargs["decoder_attention_mask"] = longer
        expected_longer = hf(ids, **kwargs).logits
        assert_close(ours(ids, **kwargs).logits, expected_longer)
    assert not torch.allclose(expected_longer, expected)


def _tiny(seed: int = 0) -> led.LEDForConditionalGeneration:
    cfg = led.LEDConfig.from_dict(hf_model().config.to_dict(), attn_backend="torch")
    torch.manual_seed(seed)
    return led.LEDForConditionalGeneration(cfg).eval()


def test_masks_of_another_shape_raise_instead_of_broadcasting():
    """A (B, 1) global mask would broadcast (every token global), a shorter one would leave tokens out,
    a longer one index past the sequence: each is refused by name, before any work."""
    model = _tiny()
    ids, mask, glob = inputs(batch=2, n=20)
    dec = ids[:, :5]
    for bad in (glob[:, :1], glob[:, :7], torch.cat([glob, glob[:, :2]], 1), glob[:1]):
        for name in ("global_attention_mask", "attention_mask"):
            kwargs = {"attention_mask": mask, "global_attention_mask": glob, name: bad}
            with pytest.raises(ValueError, match=f"{name} must have the shape"):
                model(ids, decoder_input_ids=dec, **kwargs)
    with pytest.raises(ValueError, match="input_ids must be"):
        model(ids[0], decoder_input_ids=dec)
    with pytest.raises(ValueError, match="inputs_embeds must be"):
        model(inputs_embeds=torch.randn(2, 20, 7), decoder_input_ids=dec)


def test_token_ids_outside_the_vocabulary_or_not_integers_raise():
    """Ids past the vocabulary (an IndexError from the embedding on the CPU, a device assert on a GPU)
    or of a float dtype are refused by name; the values are checked on CPU tensors."""
    model = _tiny()
    vocab = model.config.vocab_size
    ids, mask, _ = inputs(batch=2, n=20)
    dec = ids[:, :5]
    for bad, match in ((vocab, f"token id {vocab}, outside the vocabulary"), (-1, "token id -1, outside")):
        wrong = ids.clone()
        wrong[1, 7] = bad
        with pytest.raises(ValueError, match=f"input_ids holds {match}"):
            model(wrong, attention_mask=mask, decoder_input_ids=dec)
        with pytest.raises(IndexError):  # (what the embedding raised before: callers may catch it)
            model(wrong, attention_mask=mask, decoder_input_ids=dec)
        wrong_dec = dec.clone()
        wrong_dec[0, -1] = bad
        with pytest.raises(ValueError, match=f"decoder_input_ids holds {match}"):
            model(ids, attention_mask=mask, decoder_input_ids=wrong_dec)
    with pytest.raises(TypeError, match="input_ids must hold integer token ids, got torch.float32"):
        model(ids.float(), attention_mask=mask, decoder_input_ids=dec)
    with pytest.raises(TypeError, match="decoder_input_ids must hold integer token ids, got torch.bool"):
        model(ids, attention_mask=mask, decoder_input_ids=dec > 0)
    with pytest.raises(ValueError, match="decoder_input_ids must be"):
        model.get_decoder()(dec[0])
    with pytest.raises(TypeError, match="decoder_input_ids must be a torch.Tensor"):
        model.get_decoder()(dec.tolist())
    # the largest id of the vocabulary is a token
    edge = ids.clone()
    edge[0, 3] = vocab - 1
    assert torch.isfinite(model(edge, attention_mask=mask, decoder_input_ids=dec).logits).all()


def test_decoder_masks_of_another_shape_raise():
    """A decoder mask shorter than its tokens (a broadcast error deep inside before), or of another batch;
    a cross-attention mask that does not match the encoder's states."""
    model = _tiny()
    ids, mask, _ = inputs(batch=2, n=20)
    dec = ids[:, :5]
    dec_mask = torch.ones_like(dec)
    for bad in (dec_mask[:, :3], dec_mask[:1], dec_mask[0]):
        with pytest.raises(ValueError, match="decoder_attention_mask must be"):
            model(ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=bad)
    encoder_states = model.get_encoder()(ids, attention_mask=mask).last_hidden_state
    with pytest.raises(ValueError, match="the encoder's attention_mask must have the shape"):
        model.get_decoder()(dec, encoder_hidden_states=encoder_states, encoder_attention_mask=mask[:, :9])
    with pytest.raises(ValueError, match="the encoder's attention_mask must have the shape"):
        model.get_decoder()(dec, encoder_hidden_states=encoder_states, encoder_attention_mask=mask[:, None])
    # a (1, S) cross-attention mask broadcasts over the batch, as in transformers
    out = model.get_decoder()(dec, encoder_hidden_states=encoder_states, encoder_attention_mask=mask[:1])
    assert torch.isfinite(out.last_hidden_state).all()
    # a one-token step with a cache reads no decoder mask (transformers builds none): its length is free
    step = model.get_decoder()(dec, encoder_hidden_states=encoder_states, use_cache=True)
    nxt = model.get_decoder()(
        dec[:, :1], encoder_hidden_states=encoder_states, past_key_values=step.past_key_values,
        attention_mask=dec_mask,
    )  # fmt: skip
    assert torch.isfinite(nxt.last_hidden_state).all()


def test_empty_encoder_outputs_and_decoder_batch_mismatch_raise():
    model = _tiny()
    ids, mask, glob = inputs(batch=2, n=20)
    dec = ids[:, :5]
    for empty in ((), (None,)):
        with pytest.raises(ValueError, match="encoder_outputs must start with"):
            model(encoder_outputs=empty, decoder_input_ids=dec)
    with pytest.raises(ValueError, match="the encoder's batch B = 2"):
        model(ids, attention_mask=mask, decoder_input_ids=dec[:1])


def test_config_overrides_of_from_pretrained_are_converted(tmp_path):
    """from_pretrained(path, config=..., attention_window=8): the int becomes one window per layer, as
    the constructor makes it (it used to stay an int and fail at the first forward)."""
    _, ours = _pair(tmp_path)
    model = led.LEDForConditionalGeneration.from_pretrained(tmp_path, config=ours.config, attention_window=8)
    assert model.config.attention_window == [8] * model.config.encoder_layers
    ids, mask, glob = inputs(batch=2, n=20)
    assert torch.isfinite(model(ids, attention_mask=mask, decoder_input_ids=ids[:, :5]).logits).all()
    with pytest.raises(TypeError, match="attention_window"):
        led.LEDForConditionalGeneration.from_pretrained(tmp_path, config=ours.config, attention_window="8")
    for config in (None, ours.config):  # a backend name is checked at load, not at the first forward
        with pytest.raises(ValueError, match="attn_backend must be one of"):
            led.LEDForConditionalGeneration.from_pretrained(tmp_path, config=config, attn_backend="bogus")
