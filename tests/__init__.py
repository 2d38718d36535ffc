"""Vivify's test suite (``make test``). Helpers shared by tests are in :mod:`tests.support`;
fixtures in ``tests/conftest.py``. A package, so that pytest and mypy both name every module
``tests.<name>`` (the ``tests.*`` mypy override) and a helper is imported by one name only."""
