"""Package layout only; everything else is in pyproject.toml.

Why a setup.py: the import names live under one ``vivify`` namespace (``vivify.streamer``,
``vivify.engines``, ``vivify.export``, ``vivify.models``, ``vivify.client_web``) so they cannot
clash with other distributions' top-level ``streamer`` or ``engines``, while the folders stay at
the top of the checkout where the design puts them. pyproject.toml's static ``packages.find``
cannot add a prefix, so the package list is computed here from the tree: a new subpackage is
picked up without editing a list.
"""

from setuptools import find_packages, setup

ROOTS = ("streamer", "engines", "export", "models", "client_web")

setup(
    packages=[f"vivify.{name}" for root in ROOTS
              for name in find_packages(include=[root, f"{root}.*"])],
    package_dir={f"vivify.{root}": root for root in ROOTS},
)
