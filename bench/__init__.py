"""Benchmarks.

``stages.py``: stage timings on one core; ``loopback.py``: the streaming server end to end.
"""
