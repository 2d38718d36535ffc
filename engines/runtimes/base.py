"""The one runner interface (Polygraphy's shape): ``activate`` / ``infer`` / ``deactivate``.

Every runtime (ONNX Runtime on any provider, native TensorRT, torch on CUDA) is a ``Runner``
loaded from a :class:`~vivify.engines.runtimes.manifest.ModelManifest`. ``infer`` checks the feeds
against the manifest before the engine sees them, so a wrong shape fails with the input's name
rather than deep inside a GPU kernel. ``pin`` keeps inputs that do not change between calls (the
renderer's avatar bank) attached to the runner, on the device where the runtime can.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np

from vivify.engines.avatar.model_store import vivify_home
from vivify.engines.runtimes.manifest import ModelManifest

log = logging.getLogger(__name__)


def engine_cache_dir(name: str) -> Path:
    """``$VIVIFY_HOME/engines/<name>`` (else ``~/.cache/vivify/engines/<name>``): built engines
    and timing caches, kept per user so a build is reused from any working folder."""
    return vivify_home() / "engines" / name


class Runner(ABC):
    """Base class: lifecycle, pinned inputs and input checking; subclasses run the engine."""

    runtime = "abstract"

    def __init__(self, manifest: ModelManifest) -> None:
        self.manifest = manifest
        self.is_active = False
        self._pinned: dict[str, Any] = {}

    # -- lifecycle (both calls are safe twice) --
    def activate(self) -> None:
        if not self.is_active:
            self._activate()
            self.is_active = True
            log.info("%s: %s active", self.manifest.name, self.runtime)

    def deactivate(self) -> None:
        if self.is_active:
            self.is_active = False
            self._pinned.clear()
            self._deactivate()

    def __enter__(self) -> Self:
        self.activate()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.deactivate()

    # -- inputs --
    def limits(self) -> dict[str, tuple[int, int]]:
        """Bounds on named dynamic axes this runner accepts (an engine's profile)."""
        return {}

    def pin(self, feeds: Mapping[str, Any]) -> None:
        """Attach inputs that stay the same across calls (uploaded once where possible)."""
        self._require_active()
        unknown = [n for n in feeds if n not in self.manifest.input_names]
        if unknown:
            raise KeyError(f"{self.manifest.name} has no inputs {unknown}")
        self._pinned.update(self._upload(feeds))

    def _upload(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        return {k: np.ascontiguousarray(v) for k, v in feeds.items()}

    def infer(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run one call; ``feeds`` plus the pinned inputs must match the manifest."""
        self._require_active()
        merged = {**self._pinned, **feeds}
        self.manifest.check_feeds(merged, self.limits())
        return self._infer(merged)

    def _require_active(self) -> None:
        if not self.is_active:
            raise RuntimeError(f"{self.runtime} runner for {self.manifest.name} is not active")

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _deactivate(self) -> None: ...

    @abstractmethod
    def _infer(self, feeds: dict[str, Any]) -> dict[str, Any]: ...
