"""The training loop behind ``python -m led.train``: set-up, steps, evaluation, checkpoints.

One code path for one process and for ``torchrun``: the model is wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel` when there are several processes (gradients
averaged by DDP; ``no_sync`` on all but the last micro-batch of an accumulated step), each rank reads
its shard of the epoch's permutation, and only rank 0 logs, shows progress and writes files.

Exact resume: everything a step depends on is either saved in the checkpoint (weights, optimizer,
scheduler, every rank's random state, the step, the epoch and the batches consumed in it) or a
function of the seed (the data order of an epoch). The DataLoader gets its own generator so that
starting an epoch does not draw from the global random stream (that would shift dropout after a
resume). A resumed run therefore computes the same losses as an uninterrupted one.

Host synchronisation: the loss and token counts are kept on the device and read once per logged
step; the encoder gets ``max_global`` (the number of global tokens is known from the options), so
the model itself does not synchronise either.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset

import led
from led.train import checkpoint as ckpt
from led.train import distributed
from led.train.cli import UsageError
from led.train.data import ResumableSampler, Seq2SeqCollator, TokenizedDataset, read_jsonl
from led.train.monitor import ROUGE_NAMES, RunLog, peak_memory_mb, rouge, rouge_available
from led.train.presets import build_config, load_config_fields
from led.train.synthetic import SyntheticDataset, SyntheticTask

StepCallback = Callable[[int, dict[str, Any]], None]


# ------------------------------------------------------------------------------------------ data
@dataclass
class Data:
    """The datasets of a run and how to read their ids."""

    train: Dataset
    eval: Dataset | None
    vocab_size: int
    pad_token_id: int
    bos_token_id: int
    eos_token_id: int
    decode: Callable[[list[int]], str]
    tokenizer: Any | None = None
    task: SyntheticTask | None = None


def _model_window(args: argparse.Namespace) -> int:
    """Largest full attention window of the model about to be trained (before building it)."""
    try:
        if args.model:
            window = led.LEDConfig.from_pretrained(args.model).attention_window
        else:
            window = led.LEDConfig.from_dict(load_config_fields(args.config)).attention_window
    except (ValueError, TypeError, OSError) as exc:
        raise UsageError(
            f"--model {args.model}: {exc}" if args.model else f"--config {args.config}: {exc}"
        ) from exc
    return max(window)


def build_data(args: argparse.Namespace) -> Data:
    """The synthetic task's splits, or the tokenized JSON lines files."""
    if args.task == "synthetic":
        window = _model_window(args)  # (its own error names the model or config)
        try:
            task = SyntheticTask(
                max_length=args.max_source_length,
                min_length=args.synthetic_min_length,
                num_facts=args.synthetic_facts,
                num_values=args.synthetic_values,
                num_filler=args.synthetic_filler,
                # facts further apart than the one-sided window: the window around a fact's tokens
                # never holds another fact, so the binding of a value to its key is unambiguous
                min_fact_gap=window // 2 + 2,
                seed=args.seed,
            )
        except ValueError as exc:
            raise UsageError(
                f"--task synthetic with --max-source-length {args.max_source_length}, "
                f"--synthetic-min-length {args.synthetic_min_length}, --synthetic-facts "
                f"{args.synthetic_facts}: {exc}"
            ) from None
        if args.max_target_length < task.target_length:
            raise UsageError(
                f"--max-target-length {args.max_target_length} is shorter than the synthetic target "
                f"({task.target_length} tokens = --synthetic-facts + </s>)"
            )
        return Data(
            train=SyntheticDataset(task, "train", args.synthetic_train_size),
            eval=SyntheticDataset(task, "eval", args.synthetic_eval_size)
            if args.synthetic_eval_size
            else None,
            vocab_size=task.vocab_size,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            decode=task.decode,
            task=task,
        )

    tokenizer_path = args.tokenizer or args.model
    try:
        tokenizer = led.LEDTokenizer.from_pretrained(tokenizer_path)
    except (OSError, ValueError) as exc:
        option = "--tokenizer" if args.tokenizer else "--model"
        raise UsageError(f"{option} {tokenizer_path}: cannot load a tokenizer ({exc})") from None
    fields = (args.document_field, args.summary_field)
    lengths = (args.max_source_length, args.max_target_length)
    train = TokenizedDataset(read_jsonl(args.train_file, *fields), tokenizer, *lengths)
    evaluation = (
        TokenizedDataset(read_jsonl(args.eval_file, *fields), tokenizer, *lengths) if args.eval_file else None
    )

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)

    return Data(
        train=train,
        eval=evaluation,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decode=decode,
        tokenizer=tokenizer,
    )


# ------------------------------------------------------------------------------------------ model
def build_model(
    args: argparse.Namespace, data: Data, resume_from: str | None
) -> led.LEDForConditionalGeneration:
    """The model to train: the checkpoint being resumed, the ``--model`` folder, or a random init."""
    overrides = {} if args.dropout is None else {"dropout": args.dropout}
    if resume_from is not None:
        model = led.LEDForConditionalGeneration.from_pretrained(resume_from, attn_backend=args.backend)
    elif args.model:
        model = led.LEDForConditionalGeneration.from_pretrained(
            args.model, attn_backend=args.backend, **overrides
        )
    else:
        try:
            config = build_config(
                args.config,
                vocab_size=data.vocab_size,
                max_source_length=args.max_source_length,
                max_target_length=args.max_target_length,
                pad_token_id=data.pad_token_id,
                bos_token_id=data.bos_token_id,
                eos_token_id=data.eos_token_id,
                attn_backend=args.backend,
                **overrides,
            )
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--config {args.config}: {exc}") from exc
        model = led.LEDForConditionalGeneration(config)
        start_positions_at_zero(model)
    cfg = model.config
    if cfg.vocab_size < data.vocab_size:
        raise UsageError(f"the data uses {data.vocab_size} token ids but the model has {cfg.vocab_size}")
    if args.max_source_length > cfg.max_encoder_position_embeddings:
        raise UsageError(
            f"--max-source-length {args.max_source_length} exceeds the model's "
            f"{cfg.max_encoder_position_embeddings} encoder positions"
        )
    if args.max_target_length > cfg.max_decoder_position_embeddings:
        raise UsageError(
            f"--max-target-length {args.max_target_length} exceeds the model's "
            f"{cfg.max_decoder_position_embeddings} decoder positions"
        )
    if (cfg.pad_token_id, cfg.eos_token_id) != (data.pad_token_id, data.eos_token_id):
        raise UsageError(
            f"the model's pad/eos ids ({cfg.pad_token_id}, {cfg.eos_token_id}) differ from the data's "
            f"({data.pad_token_id}, {data.eos_token_id})"
        )
    return model


def start_positions_at_zero(model: led.LEDForConditionalGeneration) -> None:
    """Zero the encoder's learned position embeddings of a randomly initialised model.

    Random position vectors as large as the token embeddings (Hugging Face's init draws both with the
    same std) make every encoder state look different by position alone, which hides *what* a token
    is from the decoder's cross-attention; from zero, positions grow only as far as the task needs.
    Measured on the synthetic task (``--config small``, 384-token documents, 1000 steps of 8, lr
    2e-3): held-out loss 1.04 from zero against 1.17 from random positions. Pretrained models
    (``--model``) are not touched.
    """
    with torch.no_grad():
        model.get_encoder().embed_positions.weight.zero_()


def build_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm weights get no weight decay (the usual transformer recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() < 2 or "norm" in name else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": args.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=args.lr)


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at a step: linear warm-up, then linear / cosine / constant."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(1.0, progress)
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


# ------------------------------------------------------------------------------------------ loop
def _resume_path(args: argparse.Namespace) -> str | None:
    if not args.resume:
        return None
    if args.resume != "latest":
        return args.resume
    found = ckpt.list_checkpoints(args.output_dir)
    if not found:
        raise UsageError(f"--resume: no checkpoint-* folder with a trainer state in {args.output_dir}")
    return found[-1][1]


def _check_output_dir(args: argparse.Namespace) -> None:
    if args.resume or args.overwrite_output_dir or not os.path.isdir(args.output_dir):
        return
    previous = ckpt.list_checkpoints(args.output_dir) or os.path.isfile(
        os.path.join(args.output_dir, "log.jsonl")
    )
    if previous:
        raise UsageError(
            f"--output-dir {args.output_dir} holds an earlier run; pass --resume to continue it or "
            "--overwrite-output-dir to start over"
        )


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _forward_inputs(batch: dict[str, torch.Tensor], global_tokens: int) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "labels": batch["labels"],
        "use_cache": False,
    }
    if global_tokens > 0:
        inputs["global_attention_mask"] = batch["global_attention_mask"]
        # the count is known, so the encoder needs no host sync to size its global-token slots
        inputs["max_global"] = global_tokens
    return inputs


def evaluate(
    model: led.LEDForConditionalGeneration,
    loader: DataLoader,
    ctx: distributed.DistContext,
    args: argparse.Namespace,
    data: Data,
) -> dict[str, float]:
    """Held-out loss (mean over target tokens), teacher-forced token accuracy and, when
    ``rouge_score`` is installed, ROUGE-1/2/L of greedy (or beam) generations, over all ranks."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    correct = torch.zeros((), dtype=torch.float64, device=ctx.device)
    count = torch.zeros((), dtype=torch.float64, device=ctx.device)
    predictions: list[str] = []
    references: list[str] = []
    do_rouge = args.rouge_samples > 0 and rouge_available()
    rouge_per_rank = -(-args.rouge_samples // ctx.world_size)  # --rouge-samples in all
    autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=args.bf16)
    with torch.no_grad(), autocast:
        for batch in loader:
            batch = _to_device(batch, ctx.device)
            labels = batch["labels"]
            logits = model(**_forward_inputs(batch, args.global_tokens)).logits.float()
            mask = labels != -100
            loss_sum += F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")
            correct += ((logits.argmax(-1) == labels) & mask).sum()
            count += mask.sum()
            if do_rouge and len(predictions) < rouge_per_rank:
                glob = batch["global_attention_mask"] if args.global_tokens > 0 else None
                generated = model.generate(
                    batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    global_attention_mask=glob,
                    max_new_tokens=args.max_target_length,
                    num_beams=args.eval_num_beams,
                    max_global=args.global_tokens if args.global_tokens > 0 else None,
                )
                predictions += [data.decode(row.tolist()) for row in generated]
                references += [data.decode(row[row != -100].tolist()) for row in labels]
    totals = [loss_sum, correct, count]
    if do_rouge:
        sums = rouge(predictions, references)
        totals += [torch.tensor(sums[name], dtype=torch.float64, device=ctx.device) for name in ROUGE_NAMES]
        totals.append(torch.tensor(float(len(predictions)), dtype=torch.float64, device=ctx.device))
    reduced = distributed.all_reduce_sum(ctx, torch.stack(totals)).tolist()
    n = max(reduced[2], 1.0)
    out = {"eval_loss": reduced[0] / n, "eval_token_accuracy": reduced[1] / n}
    if do_rouge:
        generated_count = max(reduced[-1], 1.0)
        for name, value in zip(ROUGE_NAMES, reduced[3:6], strict=True):
            out[f"eval_{name}"] = value / generated_count
    if was_training:
        model.train()
    return out


def _describe_eval(step: int, metrics: dict[str, float]) -> str:
    text = f"step {step}: eval loss {metrics['eval_loss']:.4f}"
    text += f", token accuracy {metrics['eval_token_accuracy']:.3f}"
    if "eval_rouge1" in metrics:
        text += ", ROUGE-1/2/L {eval_rouge1:.2f}/{eval_rouge2:.2f}/{eval_rougeL:.2f}".format(**metrics)
    return text


def _auto_backend(
    args: argparse.Namespace, model: led.LEDForConditionalGeneration, device: torch.device
) -> str:
    # which kernels "auto" means here (for the log); best effort, the model decides at run time
    try:
        from led_kernels.backends import BACKENDS, choose_backend, load_backend

        cfg = model.config
        module = choose_backend(args.backend, device, model.dtype, cfg.d_model // cfg.encoder_attention_heads)
        name = next(n for n in BACKENDS if n != "cuda" and load_backend(n) is module)
        return name if args.backend != "auto" else f"auto ({name})"
    except Exception:  # noqa: BLE001 - only a label for the log
        return args.backend


def train(args: argparse.Namespace, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Run a training job described by parsed ``python -m led.train`` options.

    Args:
        args: from :func:`led.train.cli.parse_args`.
        on_step: called on every rank after each optimizer step with ``(step, record)``, where
            ``record`` is the step's log record (empty on steps that are not logged).

    Returns:
        ``{"losses": {step: loss}, "evals": [records], "steps": n, "output_dir": ...}``: the logged
        training losses (averaged over all ranks) and evaluation records, the same on every rank.
    """
    ctx = distributed.setup(args.device)
    ok = False
    try:
        result = _train(ctx, args, on_step)
        ok = True
        return result
    finally:
        # a failed rank must not wait in a barrier for ranks that may never get there
        distributed.cleanup(ctx, wait=ok)


def _train(
    ctx: distributed.DistContext, args: argparse.Namespace, on_step: StepCallback | None
) -> dict[str, Any]:
    _check_output_dir(args)
    resume_from = _resume_path(args)
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    data = build_data(args)
    model = build_model(args, data, resume_from).to(ctx.device)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    if ctx.rank:
        torch.manual_seed(args.seed + ctx.rank)  # each rank its own dropout stream
    ddp_model: torch.nn.Module = model
    if ctx.distributed:
        ddp_model = DistributedDataParallel(
            model,
            device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None,
            # without global tokens the encoder's global projections get no gradient
            find_unused_parameters=args.global_tokens == 0,
        )

    collate = Seq2SeqCollator(data.pad_token_id, args.global_tokens)
    sampler = ResumableSampler(
        data.train,
        ctx.world_size,
        ctx.rank,
        shuffle=True,
        seed=args.seed,
        drop_last=ctx.distributed,
        lengths=data.train.lengths() if args.group_by_length else None,
        batch_size=args.batch_size,
    )
    loader = DataLoader(
        data.train,
        batch_size=args.batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=args.num_workers,
        drop_last=True,
        pin_memory=ctx.device.type == "cuda",
        generator=torch.Generator().manual_seed(args.seed),
    )
    batches_per_epoch = len(sampler.inner) // args.batch_size
    steps_per_epoch = batches_per_epoch // args.grad_accum
    if steps_per_epoch == 0:
        raise UsageError(
            f"the training set ({len(data.train)} examples) is smaller than one step: "
            f"--batch-size {args.batch_size} x --grad-accum {args.grad_accum} x {ctx.world_size} processes"
        )
    total_steps = args.max_steps or args.epochs * steps_per_epoch

    eval_loader = None
    if data.eval is not None:
        shard = Subset(data.eval, range(ctx.rank, len(data.eval), ctx.world_size))
        eval_loader = DataLoader(shard, batch_size=args.eval_batch_size, collate_fn=collate)

    optimizer = build_optimizer(model, args)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(args.lr_schedule, args.warmup_steps, total_steps)
    )
    step, epoch, batches_done = 0, 0, 0
    if resume_from is not None:
        ckpt.load_training_state(
            resume_from, optimizer=optimizer, scheduler=scheduler, rank=ctx.rank, world_size=ctx.world_size
        )
        saved = ckpt.load_trainer_state(resume_from)
        step, epoch, batches_done = saved["step"], saved["epoch"], saved["batches_in_epoch"]

    if ctx.is_main:
        os.makedirs(args.output_dir, exist_ok=True)
    log = RunLog(args.output_dir, ctx.is_main, not args.no_progress, total_steps, initial_step=step)
    if resume_from is not None:
        log.truncate_after(step)
        log.print(f"resumed from {resume_from} at step {step} (epoch {epoch}, batch {batches_done})")
    elif ctx.is_main:
        log.truncate_after(-1)  # a fresh run (--overwrite-output-dir) starts a fresh log
        if args.overwrite_output_dir:
            ckpt.prune(args.output_dir, 0)  # so that a later --resume cannot pick up the old run
    if ctx.is_main:
        run_info = {
            "args": vars(args),
            "world_size": ctx.world_size,
            "device": str(ctx.device),
            "backend": _auto_backend(args, model, ctx.device),
            "parameters": model.num_parameters(),
            "total_steps": total_steps,
            "task": data.task.to_dict() if data.task else None,
        }
        with open(os.path.join(args.output_dir, "run.json"), "w", encoding="utf-8") as f:
            json.dump(run_info, f, indent=2, default=str)
        per_step = args.batch_size * args.grad_accum * ctx.world_size
        summary = (
            f"led.train: {model.num_parameters() / 1e6:.2f}M parameters, attention backend "
            f"{run_info['backend']}, {ctx.world_size} process(es) on {ctx.device}, "
            f"{len(data.train)} training examples, {total_steps} steps of {per_step} examples"
        )
        log.print(summary)
        if data.task is not None:
            t = data.task
            log.print(
                f"synthetic task: documents of {t.min_length or t.max_length}-{t.max_length} tokens "
                f"(held out: {t.max_length}), {t.num_facts} facts >= {t.min_fact_gap} tokens apart; "
                f"reference losses: format only {t.format_floor_loss():.3f}, "
                f"bag of values {t.bag_of_values_loss():.3f}"
            )
        if eval_loader is not None and args.rouge_samples > 0 and not rouge_available():
            log.print("ROUGE skipped: the rouge_score package is not installed (pip install rouge-score)")

    losses: dict[int, float] = {}
    evals: list[dict[str, Any]] = []

    def run_eval() -> None:
        if eval_loader is None:
            return
        metrics = evaluate(model, eval_loader, ctx, args, data)
        record = {"step": step, **metrics}
        log.record(record)
        log.print(_describe_eval(step, metrics))
        evals.append(record)

    if resume_from is None:
        run_eval()

    autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=args.bf16)
    params = [p for p in model.parameters() if p.requires_grad]
    clip = args.max_grad_norm if args.max_grad_norm > 0 else math.inf
    loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    tokens = torch.zeros((), dtype=torch.float64, device=ctx.device)
    micro_batches = 0
    t_last = time.perf_counter()
    t_start = t_last
    last_saved = -1

    while step < total_steps:
        sampler.set_epoch(epoch, skip=batches_done * args.batch_size)
        batches = iter(loader)
        while step < total_steps and batches_done + args.grad_accum <= batches_per_epoch:
            for micro in range(args.grad_accum):
                batch = next(batches)
                tokens += float(batch["attention_mask"].sum() + (batch["labels"] != -100).sum())
                batch = _to_device(batch, ctx.device)
                last = micro == args.grad_accum - 1
                sync = ddp_model.no_sync() if ctx.distributed and not last else contextlib.nullcontext()
                with sync:
                    with autocast:
                        loss = ddp_model(**_forward_inputs(batch, args.global_tokens)).loss
                    (loss / args.grad_accum).backward()
                loss_sum += loss.detach().double()
                micro_batches += 1
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            batches_done += args.grad_accum

            record: dict[str, Any] = {}
            if step % args.log_every == 0 or step == total_steps:
                stats = torch.stack([loss_sum, tokens, torch.tensor(float(micro_batches), device=ctx.device)])
                total_loss, total_tokens, total_micro = distributed.all_reduce_sum(ctx, stats).tolist()
                now = time.perf_counter()
                record = {
                    "step": step,
                    "epoch": epoch,
                    "loss": total_loss / total_micro,
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "tokens_per_s": total_tokens / max(now - t_last, 1e-9),
                    "peak_mem_mb": peak_memory_mb(ctx.device),
                    "elapsed_s": now - t_start,
                }
                log.record(record)
                log.progress(
                    step,
                    {
                        "loss": f"{record['loss']:.4f}",
                        "tok/s": f"{record['tokens_per_s']:.0f}",
                        "mem": f"{record['peak_mem_mb']:.0f}MB",
                    },
                )
                losses[step] = record["loss"]
                loss_sum.zero_()
                tokens.zero_()
                micro_batches = 0
                t_last = now
            if on_step is not None:
                on_step(step, record)
            if args.eval_every and step % args.eval_every == 0 and step != total_steps:
                run_eval()
            if args.save_every and step % args.save_every == 0:
                _save_checkpoint(ctx, args, model, optimizer, scheduler, data, step, epoch, batches_done)
                last_saved = step
        if batches_done + args.grad_accum > batches_per_epoch:
            epoch += 1
            batches_done = 0

    run_eval()
    if args.save_every and last_saved != step:
        _save_checkpoint(ctx, args, model, optimizer, scheduler, data, step, epoch, batches_done)
    if ctx.is_main:
        model.save_pretrained(args.output_dir)
        if data.tokenizer is not None:
            data.tokenizer.save_pretrained(args.output_dir)
        log.print(
            f"done: {step} steps in {time.perf_counter() - t_start:.1f}s; model saved to {args.output_dir}"
        )
    log.close()
    return {"losses": losses, "evals": evals, "steps": step, "output_dir": args.output_dir}


def _save_checkpoint(
    ctx: distributed.DistContext,
    args: argparse.Namespace,
    model: led.LEDForConditionalGeneration,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: Data,
    step: int,
    epoch: int,
    batches_done: int,
) -> None:
    # every rank hands over its random state; rank 0 writes everything
    rng_states = distributed.gather_objects(ctx, ckpt.rng_state())
    if ctx.is_main:
        trainer_state = {
            "step": step,
            "epoch": epoch,
            "batches_in_epoch": batches_done,
            "world_size": ctx.world_size,
            "args": vars(args),
        }
        path = ckpt.checkpoint_dir(args.output_dir, step)
        ckpt.save(
            path,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            rng_states=rng_states,
            trainer_state=trainer_state,
            tokenizer=data.tokenizer,
        )
        ckpt.prune(args.output_dir, args.save_total_limit)
    distributed.barrier(ctx)
