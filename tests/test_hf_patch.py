"""``lk.patch_hf_model`` on tiny random ``transformers`` LED and Longformer models.

A deep copy is patched and both run the same batch (one padded row, the first token global, a
length that is not a multiple of attention_window so Hugging Face pads internally): loss to 1e-5,
every parameter gradient to 1e-4 (fp32), the state dict and the parameter objects unchanged.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import led_kernels as lk
import led_kernels.interface
import led_kernels.masks
from led_kernels.integrations import hf as lk_hf
from led_kernels.integrations import unpatch_hf_model

transformers = pytest.importorskip("transformers")

BACKENDS = ["torch"] + (["cpu"] if lk.available_backends()["cpu"].available else [])
B, N, PAD, VOCAB = 2, 21, 6, 100  # N % 8 != 0: Hugging Face pads to the window itself


def _sharpen(model):
    """Larger attention projections than the 0.02 init, so the softmax is far from uniform and a
    wrong scale, mask or window shows up in the loss and gradients."""
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__ in lk_hf.PATCHABLE:
                for name in ("query", "key", "value", "query_global", "key_global", "value_global"):
                    getattr(module, name).weight.normal_(0, 1.0 / module.head_dim**0.5)
                    getattr(module, name).bias.normal_(0, 0.1)
    return model


def _led(attention_dropout=0.0):
    config = transformers.LEDConfig(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        attention_window=[8, 8],
        max_encoder_position_embeddings=64,
        max_decoder_position_embeddings=64,
        dropout=0.0,
        attention_dropout=attention_dropout,
        activation_dropout=0.0,
    )
    return _sharpen(transformers.LEDForConditionalGeneration(config).train())


def _longformer(masked_lm=True):
    config = transformers.LongformerConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        attention_window=8,
        max_position_embeddings=64,
        type_vocab_size=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    cls = transformers.LongformerForMaskedLM if masked_lm else transformers.LongformerModel
    return _sharpen(cls(config).train())


def _inputs(pad_token_id, glob=True):
    ids = torch.randint(3, VOCAB, (B, N))
    mask = torch.ones(B, N, dtype=torch.long)
    mask[1, N - PAD :] = 0
    ids[1, N - PAD :] = pad_token_id
    batch = {"input_ids": ids, "attention_mask": mask}
    if glob:
        g = torch.zeros(B, N, dtype=torch.long)
        g[:, 0] = 1
        batch["global_attention_mask"] = g
    return batch


def _led_batch(glob=True):
    batch = _inputs(1, glob)
    batch["labels"] = torch.randint(3, VOCAB, (B, 7))
    return batch


def _longformer_batch(glob=True):
    batch = _inputs(1, glob)
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    batch["labels"] = labels
    return batch


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


def _assert_same(ref_model, model, batch):
    ref_loss, ref_grads = _loss_and_grads(ref_model, batch)
    loss, grads = _loss_and_grads(model, batch)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=0)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        r = ref_grads[name]
        if r is None:
            assert g is None or not g.any(), name
            continue
        assert g is not None, name
        torch.testing.assert_close(g, r, atol=1e-4, rtol=0, msg=lambda m, name=name: f"grad of {name}: {m}")


@pytest.fixture
def count_calls(monkeypatch):
    """Counts calls of lk.longformer_attention made by patched modules."""
    calls = []
    real = led_kernels.interface.longformer_attention

    def counting(*args, **kwargs):
        calls.append(kwargs.get("backend"))
        return real(*args, **kwargs)

    monkeypatch.setattr(led_kernels.interface, "longformer_attention", counting)
    return calls


MODELS = {
    "led": (_led, _led_batch),
    "longformer_mlm": (_longformer, _longformer_batch),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("glob", [True, False], ids=["global", "noglobal"])
def test_patched_model_matches_transformers(kind, backend, glob, count_calls):
    make, make_batch = MODELS[kind]
    ref = make()
    model = copy.deepcopy(ref)
    params_before = {n: p for n, p in model.named_parameters()}
    assert lk.patch_hf_model(model, backend=backend) is model
    # same parameter objects, same state dict
    assert all(p is params_before[n] for n, p in model.named_parameters())
    ref_state, state = ref.state_dict(), model.state_dict()
    assert list(state) == list(ref_state)
    for name in state:
        assert torch.equal(state[name], ref_state[name]), name

    _assert_same(ref, model, make_batch(glob))
    assert count_calls == [backend] * 2  # both encoder layers ran on led-kernels


def test_longformer_base_model_hidden_states_match():
    ref = _longformer(masked_lm=False).eval()
    model = lk.patch_hf_model(copy.deepcopy(ref), backend="torch")
    batch = _longformer_batch()
    del batch["labels"]
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        a, b = ref(**batch).last_hidden_state, model(**batch).last_hidden_state
    assert a.shape == b.shape == (B, N, 32)
    torch.testing.assert_close(b[real], a[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", list(MODELS))
def test_gradient_checkpointing_matches(kind, count_calls):
    make, make_batch = MODELS[kind]
    ref = make()
    model = copy.deepcopy(ref)
    ref.gradient_checkpointing_enable()
    model.gradient_checkpointing_enable()
    lk.patch_hf_model(model, backend="torch")
    _assert_same(ref, model, make_batch())
    assert len(count_calls) >= 2


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("kind", list(MODELS))
def test_bf16_autocast_cpu(kind, backend):
    make, make_batch = MODELS[kind]
    model = lk.patch_hf_model(make(), backend=backend)
    batch = make_batch()
    with torch.no_grad():
        fp32_loss = model(**batch).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert abs(loss.item() - fp32_loss.item()) < 0.1
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_output_attentions_falls_back_with_one_warning(monkeypatch, count_calls):
    monkeypatch.setattr(lk_hf, "_warned", set())
    ref = _led().eval()
    model = lk.patch_hf_model(copy.deepcopy(ref), backend="torch")
    batch = _led_batch()
    with torch.no_grad():
        expected = ref(**batch, output_attentions=True)
        with pytest.warns(UserWarning, match="output_attentions"):
            got = model(**batch, output_attentions=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model(**batch, output_attentions=True)  # warned once only
        assert not [w for w in caught if "led_kernels" in str(w.message)]
    assert count_calls == []
    torch.testing.assert_close(got.loss, expected.loss, atol=0, rtol=0)
    for name in ("encoder_attentions", "encoder_global_attentions"):
        assert len(getattr(got, name)) == 2
        for a, b in zip(getattr(got, name), getattr(expected, name)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_attention_dropout_falls_back_while_training(monkeypatch, count_calls):
    monkeypatch.setattr(lk_hf, "_warned", set())
    ref = _led(attention_dropout=0.3)
    model = lk.patch_hf_model(copy.deepcopy(ref), backend="torch")
    batch = _led_batch()
    torch.manual_seed(1)
    expected = ref(**batch).loss
    torch.manual_seed(1)
    with pytest.warns(UserWarning, match="dropout"):
        got = model(**batch).loss
    assert count_calls == []
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    # in eval mode dropout is off, so the kernels run
    ref.eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).loss, ref(**batch).loss, atol=1e-5, rtol=0)
    assert len(count_calls) == 2


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_global_indices_computed_once_per_forward(kind, checkpointing, monkeypatch, count_calls):
    """Every layer (and a checkpointed layer's recomputation) reuses the forward's global indices:
    one global_indices call, hence at most one host sync, per forward."""
    calls = []
    real = led_kernels.masks.global_indices

    def counting(*args, **kwargs):
        calls.append(args[0].clone())
        return real(*args, **kwargs)

    monkeypatch.setattr(led_kernels.masks, "global_indices", counting)
    make, make_batch = MODELS[kind]
    model = lk.patch_hf_model(make(), backend="torch")
    if checkpointing:
        model.gradient_checkpointing_enable()
    batch = make_batch(True)
    model(**batch).loss.backward()
    assert len(count_calls) == (4 if checkpointing else 2) and len(calls) == 1
    # the mask it saw excludes padding: the padded row's tokens are never global
    assert not (calls[0][:, :N] & (batch["attention_mask"] == 0)).any()
    model(**batch).loss.backward()  # a new forward builds new mask tensors: computed again
    assert len(calls) == 2


def test_shared_global_indices_notices_in_place_edits():
    glob = torch.zeros(2, 10, dtype=torch.bool)
    glob[:, 0] = True
    masked = torch.zeros(2, 10, dtype=torch.bool)
    first = lk_hf._shared_global_indices(glob, masked)
    assert lk_hf._shared_global_indices(glob, masked) is first
    glob[1, 5] = True
    second = lk_hf._shared_global_indices(glob, masked)
    assert second.tolist() == [[0, -1], [0, 5]]
    masked[1, 0] = True
    assert lk_hf._shared_global_indices(glob, masked).tolist() == [[0], [5]]
    assert lk_hf._shared_global_indices(glob, None).tolist() == [[0, -1], [0, 5]]


def test_patch_errors_repatch_and_unpatch(count_calls):
    with pytest.raises(ValueError, match="no LEDEncoderSelfAttention"):
        lk.patch_hf_model(torch.nn.Linear(2, 2))
    for call in (lk.patch_hf_model, unpatch_hf_model):
        with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
            call(None)
    with pytest.raises(ValueError, match="backend"):
        lk.patch_hf_model(_led(), backend="nope")
    model = _led().eval()
    lk.patch_hf_model(model, backend="torch")
    lk.patch_hf_model(model, backend="auto")  # patching again only changes the backend
    batch = _led_batch()
    with torch.no_grad():
        patched = model(**batch).loss
    assert count_calls == ["auto", "auto"]
    unpatch_hf_model(model)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).loss, patched, atol=1e-5, rtol=0)
    assert len(count_calls) == 2


class _Batches(torch.utils.data.Dataset):
    """Eight copies of one padded, global-first batch element, split per row (the Trainer batches them)."""

    def __init__(self, make_batch):
        self.rows = []
        for _ in range(4):
            batch = make_batch(True)
            self.rows += [{k: v[i] for k, v in batch.items()} for i in range(B)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def _train_with_trainer(model, dataset, out_dir):
    args = transformers.TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=2,
        max_steps=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset)
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("kind", list(MODELS))
def test_patched_model_trains_inside_the_hf_trainer(kind, tmp_path, count_calls):
    pytest.importorskip("accelerate")
    make, make_batch = MODELS[kind]
    ref = make()
    model = lk.patch_hf_model(copy.deepcopy(ref), backend="torch")
    dataset = _Batches(make_batch)
    ref_losses = _train_with_trainer(ref, dataset, tmp_path / "ref")
    losses = _train_with_trainer(model, dataset, tmp_path / "patched")
    assert len(losses) == 4 and len(count_calls) >= 8  # 4 steps x 2 layers ran on led-kernels
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), atol=1e-4, rtol=0)
    for (name, p), r in zip(model.named_parameters(), ref.parameters()):  # the updates match too
        torch.testing.assert_close(p, r, atol=1e-4, rtol=0, msg=lambda m, name=name: f"{name}: {m}")


def test_import_does_not_import_transformers():
    import subprocess
    import sys

    code = "import sys, led_kernels; assert 'transformers' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
