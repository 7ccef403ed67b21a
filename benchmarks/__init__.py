"""Benchmarks of the Longformer/LED attention layer against the peers users would otherwise pick.

``python -m benchmarks`` times every provider that can run on this machine and writes
``benchmarks/results/<device-slug>-attention.{csv,png,log}`` (schema in DESIGN.md, "Benchmark
results"). Modules:

- :mod:`benchmarks.cases`: the benchmarked shape (:class:`~benchmarks.cases.Case`), the shared random
  inputs, the FLOP count (:func:`~benchmarks.cases.score_entries`), device names and slugs.
- :mod:`benchmarks.providers`: one class per provider (``torch``, ``triton``, ``cuda``, ``cpu``,
  ``hf``, ``flex``, ``sdpa``), each turning the shared inputs into a forward callable.
- :mod:`benchmarks.measure`: timing and peak-memory measurement of one (provider, case, mode).
- :mod:`benchmarks.worker`: the subprocess entry point used on the CPU (peak RSS needs a fresh process).
- :mod:`benchmarks.harness`: the command line, the sweep, the table, the CSV and the log.
- :mod:`benchmarks.plot`: the PNG (``python -m benchmarks.plot <csv>`` redraws it).
- :mod:`benchmarks.selfcheck`: every provider's output and gradient against the ``torch`` backend.
"""
