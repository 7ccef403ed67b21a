"""``python -m led.train``: fine-tune LED on long documents, on one device or under ``torchrun``.

The model is :class:`led.LEDForConditionalGeneration` (encoder attention on ``led_kernels``), loaded
from a Hugging Face LED folder (``--model``) or built from a preset / JSON config with a random
initialisation (``--config``). Data is JSON lines with ``document`` and ``summary`` fields tokenized
by :class:`led.LEDTokenizer`, or the built-in synthetic long-range recall task
(``--task synthetic``, :mod:`led.train.synthetic`). ``python -m led.train --help`` lists the options.

The run writes into ``--output-dir``: ``log.jsonl`` (one JSON record per logged step and per
evaluation), ``run.json`` (options and set-up), ``checkpoint-<step>/`` folders (a Hugging Face model
folder plus the optimizer, scheduler, random and step state that ``--resume`` needs to continue
exactly), and the final model.

Modules: :mod:`~led.train.cli` (options), :mod:`~led.train.loop` (the loop),
:mod:`~led.train.data` (JSON lines, batching, sharding), :mod:`~led.train.synthetic` (the task),
:mod:`~led.train.presets` (model shapes), :mod:`~led.train.checkpoint` (exact resume),
:mod:`~led.train.distributed` (process group), :mod:`~led.train.monitor` (log, progress, ROUGE).

From Python::

    from led.train import main
    main(["--task", "synthetic", "--config", "tiny", "--max-source-length", "512",
          "--max-steps", "20", "--output-dir", "runs/smoke"])
"""

from led.train.cli import build_parser, main, parse_args
from led.train.loop import train

__all__ = ["build_parser", "main", "parse_args", "train"]
