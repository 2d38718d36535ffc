"""Benchmarks (``make bench``; docs/benchmarks.md).

``run.py``: the orchestrator (progress, one JSON, report); ``stages.py``: per-stage costs on one
core; ``loopback.py``: the streaming server end to end; ``report.py``: markdown + plots;
``soak.py``: memory over a long run; ``compare.py``: two versions as ratios; ``browser.py``:
browser-side figures; ``machine.py``: what the numbers depend on.
"""
