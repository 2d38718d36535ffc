"""Benchmarks (``make bench``; docs/benchmarks.md).

``run.py``: the orchestrator (progress, one JSON, report); ``stages.py``: per-stage costs on one
core; ``loopback.py``: the streaming server end to end (signals in ``signals.py``, the frame
analysis in ``loopback_analysis.py``); ``report.py``: markdown + plots; ``soak.py``: memory over
a long run; ``compare.py``: two versions as ratios; ``browser.py``: browser-side figures;
``fuzz/``: a hostile client (``make fuzz``); ``pipeline.py``: the GPU pipeline;
``harness/``: what they share (the live server, peers, the stage runner, /proc, machine info).
"""
