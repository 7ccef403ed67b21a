"""``python -m led.train``: backends train alike, DDP under torchrun, exact resume, JSON lines data, errors.

The runs are tiny (the ``tiny`` preset: d_model 32, 2+2 layers, window 16) so the whole file takes
about half a minute on two CPU cores. Torch runs single-threaded here: on a shared two-core machine a
second OpenMP thread that gets descheduled makes every small op wait for it (several times slower),
and one thread also keeps the floating-point results independent of the thread count.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import led
from led.train import checkpoint as ckpt
from led.train.cli import parse_args
from led.train.loop import lr_lambda, train
from led.train.monitor import rouge_available
from led.train.synthetic import SyntheticTask

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A synthetic task small enough for the Triton interpreter: 2 facts in 48-token documents.
TINY_TASK = [
    "--task", "synthetic", "--config", "tiny", "--synthetic-facts", "2", "--max-source-length", "48",
    "--max-target-length", "8", "--rouge-samples", "0", "--no-progress",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(tmp_path, name: str, *extra: str, on_step=None) -> dict:
    args = parse_args([*TINY_TASK, "--output-dir", str(tmp_path / name), *extra])
    return train(args, on_step=on_step)


def _log(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _step_losses(records: list[dict]) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records if "loss" in r}


# ------------------------------------------------------------------------------------------ backends
# Same seed, no dropout, fp32: every backend must give the loss curve of the `torch` reference over
# BACKEND_STEPS steps. The backends' attention outputs differ from the reference by rounding; Adam
# divides each update by the root of its squared-gradient average, which amplifies such differences
# in parameters whose gradients are near zero, so they can grow over the steps. Measured on these
# runs: 2.3e-7 (cpu) and 1.2e-7 (triton) relative at most over the 24 steps. The tolerance, 1e-4,
# leaves a factor of ~400 for other machines and thread counts, while a real fault is far larger:
# `test_backend_tolerance_catches_a_real_difference` shows that dropping the one global token moves
# the loss by 1.3e-3 relative (13x the tolerance) within the same steps.
BACKEND_RTOL = 1e-4
BACKEND_STEPS = 24
BACKEND_RUNS = {
    # batches of two documents of different lengths: padding and global tokens in every batch
    "cpu": ("--batch-size", "2", "--max-source-length", "40", "--synthetic-min-length", "24"),
    # the Triton interpreter costs about a second per step even at this size
    "triton": ("--batch-size", "1", "--max-source-length", "32"),
}


def _backend_curve(tmp_path, backend: str, options: tuple[str, ...], *extra: str) -> dict[int, float]:
    out = _run(
        tmp_path,
        f"{backend}-{len(options)}-{len(extra)}",
        "--backend", backend, "--dropout", "0", "--max-steps", str(BACKEND_STEPS), "--lr", "3e-3",
        "--synthetic-eval-size", "0", "--seed", "3", *options, *extra,
    )  # fmt: skip
    return out["losses"]


@pytest.mark.parametrize("backend", sorted(BACKEND_RUNS))
def test_backends_train_like_the_reference(tmp_path, backend):
    import led_kernels as lk

    status = lk.available_backends()[backend]
    if not status.available:
        pytest.skip(f"{backend}: {status.reason}")
    reference = _backend_curve(tmp_path, "torch", BACKEND_RUNS[backend])
    got = _backend_curve(tmp_path, backend, BACKEND_RUNS[backend])
    assert sorted(got) == list(range(1, BACKEND_STEPS + 1))
    for step, loss in reference.items():
        assert math.isfinite(got[step])
        assert got[step] == pytest.approx(loss, rel=BACKEND_RTOL), f"{backend} step {step}"
    # long enough to learn the output format: the loss must go down
    first, last = reference[1], sum(reference[s] for s in range(BACKEND_STEPS - 4, BACKEND_STEPS + 1)) / 5
    assert last < 0.8 * first, (first, last)


def test_backend_tolerance_catches_a_real_difference(tmp_path):
    # the same run without global attention (an attention fault of the size a bug would make)
    reference = _backend_curve(tmp_path, "torch", BACKEND_RUNS["cpu"])
    changed = _backend_curve(tmp_path, "torch", BACKEND_RUNS["cpu"], "--global-tokens", "0")
    worst = max(abs(changed[s] - reference[s]) / reference[s] for s in reference)
    assert worst > 5 * BACKEND_RTOL, worst


def test_gradient_checkpointing_and_bf16(tmp_path):
    common = (
        "--dropout",
        "0",
        "--batch-size",
        "2",
        "--max-steps",
        "6",
        "--synthetic-eval-size",
        "2",
        "--seed",
        "3",
    )
    plain = _run(tmp_path, "plain", *common)
    # recomputing the layers in the backward pass changes no number (no dropout)
    checkpointed = _run(tmp_path, "checkpointed", *common, "--gradient-checkpointing")
    assert checkpointed["losses"] == pytest.approx(plain["losses"], rel=1e-6)
    # bfloat16 autocast: the fp32 curve up to bf16 rounding (~0.4% per op), never NaN
    bf16 = _run(tmp_path, "bf16", *common, "--bf16")
    assert bf16["losses"] == pytest.approx(plain["losses"], rel=5e-2)
    assert bf16["evals"][-1]["eval_loss"] == pytest.approx(plain["evals"][-1]["eval_loss"], rel=5e-2)
    assert bf16["losses"] != plain["losses"]  # autocast really ran in bf16


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    # two micro-batches of one example make the step of one batch of two (same examples, same order;
    # synthetic targets all have the same length, so the mean of the two means is the batch mean)
    common = ("--dropout", "0", "--max-steps", "6", "--synthetic-eval-size", "2", "--seed", "3")
    batched = _run(tmp_path, "batched", *common, "--batch-size", "2")
    accumulated = _run(tmp_path, "accumulated", *common, "--batch-size", "1", "--grad-accum", "2")
    assert accumulated["losses"] == pytest.approx(batched["losses"], rel=1e-5)
    assert accumulated["evals"][-1]["eval_loss"] == pytest.approx(batched["evals"][-1]["eval_loss"], rel=1e-5)
    # and it is not the run with a batch of one
    single = _run(tmp_path, "single", *common, "--batch-size", "1")
    assert single["losses"][6] != pytest.approx(batched["losses"][6], rel=1e-3)


# ------------------------------------------------------------------------------------------ resume
def test_resume_gives_the_losses_of_an_uninterrupted_run(tmp_path):
    # dropout on (the tiny preset's 0.1), 6 examples in batches of 2: epochs of 3 steps, so the
    # checkpoint at step 4 sits inside the second epoch and the resumed run must skip one batch of
    # its data, restore the optimizer, the linear schedule and the dropout random stream
    common = (
        "--batch-size", "2", "--max-steps", "8", "--synthetic-train-size", "6", "--synthetic-eval-size", "2",
        "--warmup-steps", "2", "--eval-every", "4", "--seed", "5",
    )  # fmt: skip
    full = _run(tmp_path, "full", *common)

    class Crash(RuntimeError):
        pass

    def crash_after_6(step, record):
        if step == 6:
            raise Crash

    with pytest.raises(Crash):
        _run(tmp_path, "resumed", *common, "--save-every", "4", on_step=crash_after_6)
    out = tmp_path / "resumed"
    assert [s for s, _ in ckpt.list_checkpoints(str(out))] == [4]
    state = ckpt.load_trainer_state(str(out / "checkpoint-4"))
    assert (state["step"], state["epoch"], state["batches_in_epoch"]) == (4, 1, 1)

    _run(tmp_path, "resumed", *common, "--save-every", "4", "--resume")
    records = _log(out / "log.jsonl")
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, 9))  # the interrupted run's steps 5-6 were replaced, not repeated
    resumed = _step_losses(records)
    assert resumed == full["losses"]  # bitwise: same data, same random streams, same arithmetic
    evals = {r["step"]: r["eval_loss"] for r in records if "eval_loss" in r}
    assert evals == {e["step"]: e["eval_loss"] for e in full["evals"]}
    # and the final weights are the same
    a = led.LEDForConditionalGeneration.from_pretrained(tmp_path / "full")
    b = led.LEDForConditionalGeneration.from_pretrained(out)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_resume_without_the_random_state_would_differ(tmp_path, monkeypatch):
    # the resume test above can fail: skipping the dropout stream's restore changes the losses
    common = (
        "--batch-size", "2", "--max-steps", "4", "--synthetic-train-size", "6", "--synthetic-eval-size", "0",
        "--seed", "5",
    )  # fmt: skip
    full = _run(tmp_path, "full", *common)
    _run(tmp_path, "part", *common, "--save-every", "2", "--max-steps", "2")
    monkeypatch.setattr(ckpt, "set_rng_state", lambda state: None)
    resumed = _run(tmp_path, "part", *common, "--resume")
    assert resumed["losses"][3] != full["losses"][3]


# ------------------------------------------------------------------------------------------ DDP
def test_torchrun_two_processes_match_one_process_with_twice_the_batch(tmp_path):
    # Each rank takes its shard of the same epoch permutation: ranks 0 and 1 together see what one
    # process sees with a batch twice as large. Synthetic targets all have the same length, so the
    # mean of the two ranks' mean losses (DDP averages the gradients) is the one-process mean loss;
    # the only difference is the order of floating-point sums (gloo's all-reduce, batched matmuls).
    common = (
        "--task", "synthetic", "--config", "tiny", "--synthetic-facts", "2", "--max-source-length", "64",
        "--max-target-length", "8", "--rouge-samples", "0", "--dropout", "0", "--max-steps", "6",
        "--save-every", "3", "--eval-every", "3", "--synthetic-eval-size", "6", "--lr", "3e-3",
    )  # fmt: skip
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "led.train", *common, "--batch-size", "1", "--output-dir", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    # rank 0 alone reports: one start line, one summary, one line per evaluation
    assert console.count("led.train: ") == 1, console
    assert console.count("done: 6 steps") == 1, console
    assert console.count("step 3: eval loss") == 1, console

    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2
    records = _log(out / "log.jsonl")
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 7))
    assert [r["step"] for r in records if "eval_loss" in r] == [0, 3, 6]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["checkpoint-3", "checkpoint-6", "config.json", "generation_config.json", "log.jsonl",
         "model.safetensors", "run.json"]
    )  # fmt: skip
    assert sorted(p.name for p in (out / "checkpoint-6").iterdir()) == sorted(
        ["config.json", "generation_config.json", "model.safetensors", "optimizer.pt", "scheduler.pt",
         "rng_state_0.pt", "rng_state_1.pt", "trainer_state.json"]
    )  # fmt: skip
    assert led.LEDForConditionalGeneration.from_pretrained(out).config.vocab_size > 0

    single = train(
        parse_args([*common, "--no-progress", "--batch-size", "2", "--output-dir", str(tmp_path / "one")])
    )
    ddp_losses = _step_losses(records)
    for step, loss in single["losses"].items():
        assert ddp_losses[step] == pytest.approx(loss, rel=1e-4), step
    ddp_evals = {r["step"]: r["eval_loss"] for r in records if "eval_loss" in r}
    for record in single["evals"]:
        assert ddp_evals[record["step"]] == pytest.approx(record["eval_loss"], rel=1e-4)


# ------------------------------------------------------------------------------------------ JSON lines
PROSE = [
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
    "want of a wife.",
    "Call me Ishmael. Some years ago, having little or no money in my purse, and nothing particular to "
    "interest me on shore, I thought I would sail about a little and see the watery part of the world.",
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing "
    "to do.",
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> str:
    """A small byte-level BPE in the LED layout (vocab.json + merges.txt, <mask> last)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=400,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(PROSE * 2, trainer=trainer)
    folder = tmp_path_factory.mktemp("tokenizer")
    tok.model.save(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    return str(folder)


def _write_jsonl(path, records) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


def _documents(n: int) -> list[dict]:
    return [
        {
            "document": " ".join(PROSE[(i + j) % len(PROSE)] for j in range(3)),
            "summary": PROSE[i % len(PROSE)][:40],
        }
        for i in range(n)
    ]


def test_jsonl_data_end_to_end(tmp_path, tokenizer_dir, capsys):
    train_file = _write_jsonl(tmp_path / "train.jsonl", _documents(6))
    eval_file = _write_jsonl(tmp_path / "eval.jsonl", _documents(2))
    out = tmp_path / "run"
    args = parse_args(
        [
            "--config", "tiny", "--tokenizer", tokenizer_dir, "--train-file", train_file,
            "--eval-file", eval_file,
            "--max-source-length", "96", "--max-target-length", "24", "--batch-size", "2", "--max-steps", "6",
            "--eval-every", "3", "--save-every", "3", "--rouge-samples", "2", "--output-dir", str(out),
            "--no-progress",
        ]
    )  # fmt: skip
    result = train(args)
    err = capsys.readouterr().err
    records = _log(out / "log.jsonl")
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 3, 6]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert all(r["tokens_per_s"] > 0 and r["peak_mem_mb"] > 0 for r in records if "loss" in r)
    if rouge_available():
        assert all(0 <= r["eval_rouge1"] <= 100 for r in evals)
    else:
        assert "ROUGE skipped" in err
        assert all("eval_rouge1" not in r for r in evals)
    # the output folder and the checkpoints are complete Hugging Face folders, tokenizer included
    for folder in (out, out / "checkpoint-6"):
        model = led.LEDForConditionalGeneration.from_pretrained(folder)
        tok = led.LEDTokenizer.from_pretrained(folder)
        assert model.config.vocab_size == len(tok)
        assert model.config.max_encoder_position_embeddings >= 96
    assert result["steps"] == 6


def test_rouge_is_computed_on_generations(tmp_path, monkeypatch):
    # the evaluation's generate -> decode -> score -> average path, with a stand-in scorer (the
    # rouge_score package is optional) that gives each variant its own score per pair
    from led.train import loop

    scored: list[tuple[str, str]] = []
    per_pair = {"rouge1": 10.0, "rouge2": 20.0, "rougeL": 30.0}

    def stand_in(predictions, references):
        scored.extend(zip(predictions, references, strict=True))
        return {name: value * len(predictions) for name, value in per_pair.items()}

    monkeypatch.setattr(loop, "rouge_available", lambda: True)
    monkeypatch.setattr(loop, "rouge", stand_in)
    out = _run(tmp_path, "rouge", "--max-steps", "2", "--synthetic-eval-size", "4", "--rouge-samples", "3")
    # two evaluations (before and after), each generating batches of one until 3 are done
    task = SyntheticTask(max_length=48, num_facts=2, min_fact_gap=10, seed=42)
    references = [task.decode(task.example(i, "eval")[1]) for i in range(3)]
    assert [r for _, r in scored] == references * 2
    names = {task.token(i) for i in range(task.vocab_size)}
    assert all(set(p.split()) <= names for p, _ in scored)  # decoded generations, specials skipped
    assert [(r["step"], r["eval_rouge1"], r["eval_rouge2"], r["eval_rougeL"]) for r in out["evals"]] == [
        (0, 10.0, 20.0, 30.0),
        (2, 10.0, 20.0, 30.0),
    ]


def test_fine_tune_a_saved_model_folder(tmp_path, tokenizer_dir):
    # --model: a folder from a first run is fine-tuned further (its tokenizer found in the folder)
    train_file = _write_jsonl(tmp_path / "train.jsonl", _documents(4))
    base = [
        "--train-file", train_file, "--max-source-length", "96", "--max-target-length", "24",
        "--batch-size", "2", "--max-steps", "2", "--no-progress",
    ]  # fmt: skip
    train(
        parse_args(
            [*base, "--config", "tiny", "--tokenizer", tokenizer_dir, "--output-dir", str(tmp_path / "a")]
        )
    )
    second = train(parse_args([*base, "--model", str(tmp_path / "a"), "--output-dir", str(tmp_path / "b")]))
    assert second["steps"] == 2 and all(math.isfinite(v) for v in second["losses"].values())


# ------------------------------------------------------------------------------------------ errors
def _error(tmp_path, capsys, argv: list[str]) -> str:
    from led.train.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    assert code == 2
    return capsys.readouterr().err


def test_jsonl_errors_name_the_line_and_field(tmp_path, tokenizer_dir, capsys):
    base = ["--config", "tiny", "--tokenizer", tokenizer_dir, "--max-source-length", "64", "--no-progress"]
    cases = {
        "missing": (
            [{"document": "a b c", "summary": "a"}, {"document": "d e f"}],
            ":2: missing field 'summary'",
        ),
        "type": ([{"document": 3, "summary": "x"}], ":1: field 'document' must be a string"),
        "json": ([{"document": "a", "summary": "b"}, "", "{not json"], ":3: not valid JSON"),
        "array": (["[1, 2]"], ":1: expected a JSON object"),
    }
    for name, (records, expected) in cases.items():
        path = _write_jsonl(tmp_path / f"{name}.jsonl", records)
        err = _error(tmp_path, capsys, [*base, "--train-file", path, "--output-dir", str(tmp_path / name)])
        assert f"{name}.jsonl{expected}" in err, err
    # other field names are honoured
    path = _write_jsonl(tmp_path / "fields.jsonl", [{"text": "a b", "abstract": "a"}])
    err = _error(tmp_path, capsys, [*base, "--train-file", path, "--output-dir", str(tmp_path / "f")])
    assert "missing field 'document'" in err
    out = tmp_path / "fields-ok"
    code_args = [*base, "--train-file", path, "--output-dir", str(out), "--max-steps", "1"]
    train(parse_args([*code_args, "--document-field", "text", "--summary-field", "abstract"]))
    assert (out / "log.jsonl").is_file()


def test_bad_arguments_give_clear_errors(tmp_path, capsys):
    out = ["--output-dir", str(tmp_path / "x")]
    bad_window = tmp_path / "window.json"
    bad_window.write_text('{"attention_window": "16", "encoder_layers": 2}')
    checks = [
        (["--config", "tiny", *out], "--task jsonl needs --train-file"),
        (["--config", "nope", "--task", "synthetic", *out], "neither a preset"),
        (["--model", str(tmp_path / "missing"), "--task", "synthetic", *out], "not a folder"),
        (["--config", "tiny", "--model", str(tmp_path), "--task", "synthetic", *out], "not allowed with"),
        (["--config", "tiny", "--task", "synthetic", "--train-file", "t.jsonl", *out], "does not apply"),
        (["--config", "tiny", "--task", "synthetic", "--batch-size", "0", *out], "--batch-size"),
        (["--config", "tiny", "--task", "synthetic", "--dropout", "1.5", *out], "--dropout"),
        (
            ["--config", "tiny", "--task", "synthetic", "--max-source-length", "20", *out],
            "--max-source-length 20",
        ),
        (
            ["--config", "tiny", "--task", "synthetic", "--max-target-length", "4", *out],
            "--max-target-length 4",
        ),
        (["--config", "tiny", "--task", "synthetic", "--resume", *out], "no checkpoint"),
        (["--config", "tiny", "--tokenizer", str(tmp_path), "--train-file", __file__, *out], "--tokenizer"),
        # non-finite rates would train to NaN weights and exit 0
        (["--config", "tiny", "--task", "synthetic", "--lr", "inf", *out], "--lr: must be a finite"),
        (["--config", "tiny", "--task", "synthetic", "--weight-decay", "nan", *out], "--weight-decay"),
        (["--config", "tiny", "--task", "synthetic", "--seed", str(2**70), *out], "--seed: must be in"),
        # a config file whose fields LEDConfig refuses, an output dir that is a file: no traceback
        (["--config", str(bad_window), "--task", "synthetic", *out], f"--config {bad_window}"),
        (["--config", "tiny", "--task", "synthetic", "--output-dir", __file__], "led.train: error:"),
    ]
    if not torch.cuda.is_available():  # (a traceback from the device set-up before)
        checks.append(
            (["--config", "tiny", "--task", "synthetic", "--device", "cuda", *out], "--device cuda: no")
        )
    for argv, expected in checks:
        err = _error(tmp_path, capsys, [*argv, "--no-progress"])
        assert expected in err, (argv, err)
    # an output dir holding an earlier run is not silently overwritten
    _run(tmp_path, "earlier", "--max-steps", "1", "--synthetic-eval-size", "0")
    err = _error(tmp_path, capsys, [*TINY_TASK, "--output-dir", str(tmp_path / "earlier")])
    assert "holds an earlier run" in err


# ------------------------------------------------------------------------------------------ pieces
def test_synthetic_task_is_deterministic_long_range_and_held_out():
    task = SyntheticTask(max_length=600, min_length=200, num_facts=4, num_values=16, min_fact_gap=40, seed=7)
    again = SyntheticTask(max_length=600, min_length=200, num_facts=4, num_values=16, min_fact_gap=40, seed=7)
    train_examples = [task.example(i) for i in range(50)]
    assert train_examples == [again.example(i) for i in range(50)]
    assert train_examples != [SyntheticTask(**{**task.to_dict(), "seed": 8}).example(i) for i in range(50)]
    held_out = [task.example(i, "eval") for i in range(50)]
    assert not {tuple(s) for s, _ in held_out} & {tuple(s) for s, _ in train_examples}
    assert {len(s) for s, _ in held_out} == {600}
    lengths = [len(s) for s, _ in train_examples]
    assert min(lengths) >= 200 and max(lengths) <= 600 and len(set(lengths)) > 10
    for source, target in train_examples + held_out:
        assert (source[0], source[-1]) == (0, 2)  # <s> ... </s>
        facts = {
            source[i]: (i, source[i + 1])
            for i in range(len(source))
            if task.key_offset <= source[i] < task.value_offset
        }
        assert sorted(facts) == [task.key_offset + k for k in range(task.num_facts)]
        positions = sorted(p for p, _ in facts.values())
        gaps = [b - a for a, b in zip([0, *positions], positions)]
        assert min(gaps) >= task.min_fact_gap
        # the target is the facts' values in key order
        assert target == [facts[task.key_offset + k][1] for k in range(task.num_facts)] + [2]
    assert task.bag_of_values_loss() < task.format_floor_loss()


def test_lr_schedules():
    linear = lr_lambda("linear", 2, 10)
    assert [round(linear(s), 3) for s in (0, 1, 2, 6, 10, 12)] == [0.333, 0.667, 1.0, 0.5, 0.0, 0.0]
    cosine = lr_lambda("cosine", 0, 10)
    assert cosine(0) == 1.0 and cosine(5) == pytest.approx(0.5) and cosine(10) == pytest.approx(0.0)
    assert lr_lambda("constant", 3, 10)(9) == 1.0


def test_length_grouped_batches_are_deterministic_and_resumable():
    from led.train.data import ResumableSampler

    lengths = [int(x) for x in torch.randint(10, 1000, (96,), generator=torch.Generator().manual_seed(0))]
    data = list(range(96))

    def epoch(rank: int, skip: int = 0) -> list[int]:
        sampler = ResumableSampler(data, 2, rank, True, seed=1, drop_last=True, lengths=lengths, batch_size=4)
        sampler.set_epoch(3, skip=skip)
        return list(sampler)

    order = epoch(0)
    assert order == epoch(0) and order[8:] == epoch(0, skip=8)
    assert sorted(order + epoch(1)) == data  # the two ranks share the epoch without overlap
    batches = [order[i : i + 4] for i in range(0, len(order), 4)]
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 100  # random batches of 4 would spread ~500 on lengths uniform in [10, 1000)
