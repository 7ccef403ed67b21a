"""One LED training step (forward + backward) on a long input: ``led`` vs ``transformers``, time and memory.

The model is a Hugging Face folder with LED-base's configuration (d_model 768, 6+6 layers, 12 heads,
FFN 3072, attention_window 1024, 16384 encoder positions) and random weights; it is created once
(by ``transformers``) and reused. Each implementation then runs in a fresh Python process, which

1. loads the folder (``led.LEDForConditionalGeneration.from_pretrained(..., attn_backend=...)`` or
   ``transformers.LEDForConditionalGeneration.from_pretrained``) and puts it in ``train()`` mode;
2. builds one batch: ``--seqlen`` encoder tokens with global attention on ``<s>``, ``--target-len``
   label tokens;
3. records its resident set size (VmRSS), runs ``--warmup`` + ``--reps`` steps of
   ``model(...).loss.backward()`` (gradients zeroed in between), and reports the median step time and
   the peak memory: ``getrusage(RUSAGE_SELF).ru_maxrss`` after the steps minus the RSS before them.

Usage (CPU; the numbers depend on the machine and on anything else running on it)::

    python benchmarks/led_step.py                       # 8192 tokens, both implementations
    python benchmarks/led_step.py --seqlen 16384 --impl led --backend torch
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

LED_BASE = dict(
    vocab_size=50265,
    d_model=768,
    encoder_layers=6,
    decoder_layers=6,
    encoder_attention_heads=12,
    decoder_attention_heads=12,
    encoder_ffn_dim=3072,
    decoder_ffn_dim=3072,
    attention_window=[1024] * 6,
    max_encoder_position_embeddings=16384,
    max_decoder_position_embeddings=1024,
)


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def make_folder(folder: str) -> None:
    """Write a random-weight LED-base folder with transformers (skipped when it already exists)."""
    if os.path.isfile(os.path.join(folder, "config.json")):
        return
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.LEDForConditionalGeneration(transformers.LEDConfig(**LED_BASE))
    model.save_pretrained(folder)


def worker(args: argparse.Namespace) -> dict:
    """Runs in a fresh process: load, then time and measure the steps."""
    import resource

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.impl == "led":
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        import led

        model = led.LEDForConditionalGeneration.from_pretrained(args.folder, attn_backend=args.backend)
    else:
        import transformers

        transformers.logging.set_verbosity_error()  # its "padded to a multiple of window" notice
        model = transformers.LEDForConditionalGeneration.from_pretrained(args.folder)
    model.train()

    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (1, args.seqlen), generator=gen)
    ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
    mask = torch.ones_like(ids)
    glob = torch.zeros_like(ids)
    glob[:, 0] = 1
    labels = torch.randint(3, vocab, (1, args.target_len), generator=gen)

    with torch.no_grad():  # page in every weight (transformers may load them memory-mapped) before measuring
        for p in model.parameters():
            p.sum()
    rss_before = _rss_kb()
    times, losses = [], []
    for i in range(args.warmup + args.reps):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, global_attention_mask=glob, labels=labels).loss
        loss.backward()
        elapsed = time.perf_counter() - start
        if i >= args.warmup:
            times.append(elapsed)
        losses.append(float(loss))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "impl": args.impl if args.impl == "hf" else f"led[{args.backend}]",
        "seqlen": args.seqlen,
        "target_len": args.target_len,
        "threads": torch.get_num_threads(),
        "step_s": statistics.median(times),
        "step_s_all": times,
        "peak_mem_mb": (peak_kb - rss_before) / 1024,
        "rss_before_mb": rss_before / 1024,
        "loss": losses[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seqlen", type=int, default=8192)
    parser.add_argument("--target-len", type=int, default=256)
    parser.add_argument("--impl", choices=["both", "led", "hf"], default="both")
    parser.add_argument("--backend", default="torch", help="led_kernels backend for the led model")
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "led-base-16384-random"))
    parser.add_argument("--warmup", type=int, default=0, help="untimed first steps (counted for memory)")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args)))
        return

    make_folder(args.folder)
    results = []
    for impl in ("led", "hf") if args.impl == "both" else (args.impl,):
        argv = [sys.executable, os.path.abspath(__file__), "--worker", "--impl", impl]
        for name in ("seqlen", "target_len", "backend", "folder", "warmup", "reps", "threads"):
            argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{impl}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    print(
        f"LED-base, random weights, B=1, {args.seqlen} encoder tokens (global <s>), "
        f"{args.target_len} labels, forward+backward, CPU"
    )
    print(f"{'impl':<12} {'step s':>8} {'peak MB':>9} {'loss':>9}")
    for r in results:
        print(f"{r['impl']:<12} {r['step_s']:>8.2f} {r['peak_mem_mb']:>9.0f} {r['loss']:>9.4f}")
    if len(results) == 2:
        ours, theirs = results
        print(
            f"led vs transformers: {theirs['step_s'] / ours['step_s']:.2f}x faster, "
            f"{theirs['peak_mem_mb'] / ours['peak_mem_mb']:.2f}x less peak memory"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
