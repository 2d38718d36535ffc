"""What a runner loads: an ONNX file plus its manifest (sha256, inputs, outputs, dynamic axes).

Manifests are the contract between ``export/`` and the runtimes (ARCHITECTURE.md: "runtimes load
only through the manifest"). Shapes are lists whose string entries are *named* dynamic axes
(``"batch"``, ``"avatars"``); one name must take one value across all inputs of a call, which
is how a batch of 3 motions with 2 avatar indices is caught before it reaches an engine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vivify.engines.avatar.model_store import sha256_file
from vivify.engines.motion.vector import RIG_VERSION
from vivify.engines.runtimes.errors import InputMismatchError

Dim = int | str


class ManifestMismatchError(ValueError):
    """The ONNX file is missing or does not match its manifest (sha256, rig version)."""


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: dtype and shape (ints static, strings named dynamic axes)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


@dataclass(frozen=True)
class ModelManifest:
    """A checked manifest: the model file, its digest, and its I/O contract."""

    path: Path  # the manifest JSON
    name: str
    onnx_path: Path
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def load(cls, path: Path | str, verify: bool = True) -> ModelManifest:
        """Read a manifest; with ``verify`` check the file's sha256 and the rig version."""
        path = Path(path)
        if not path.is_file():
            raise ManifestMismatchError(f"no manifest at {path}")
        raw = json.loads(path.read_text())
        onnx_path = path.parent / raw["file"]
        if verify:
            if not onnx_path.is_file():
                raise ManifestMismatchError(f"model file {onnx_path} named by {path} is missing")
            digest = sha256_file(onnx_path)
            if digest != raw["sha256"]:
                raise ManifestMismatchError(
                    f"{onnx_path} has sha256 {digest}, manifest says {raw['sha256']}")
            if raw.get("rig_version") != RIG_VERSION:
                raise ManifestMismatchError(f"{onnx_path} was made for rig "
                                            f"{raw.get('rig_version')!r}, this is {RIG_VERSION!r}")
        dtypes = raw.get("dtypes", {})

        def specs(section: Mapping[str, list]) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(n, dtypes.get(n, "float32"), tuple(s))
                         for n, s in section.items())

        return cls(path=path, name=raw.get("name", onnx_path.stem), onnx_path=onnx_path,
                   sha256=raw["sha256"], inputs=specs(raw["inputs"]),
                   outputs=specs(raw["outputs"]), raw=raw)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)

    def dynamic_dims(self) -> tuple[str, ...]:
        """Every named dynamic axis, in first-seen order."""
        seen: dict[str, None] = {}
        for spec in self.inputs:
            for d in spec.dynamic_axes.values():
                seen.setdefault(d)
        return tuple(seen)

    def check_feeds(self, feeds: Mapping[str, Any],
                    limits: Mapping[str, tuple[int, int]] | None = None) -> dict[str, int]:
        """Raise :class:`InputMismatchError` unless ``feeds`` match; return the dynamic sizes.

        ``limits`` bounds named axes (e.g. a TensorRT profile's batch range).
        """
        missing = [n for n in self.input_names if n not in feeds]
        extra = [n for n in feeds if n not in self.input_names]
        if missing or extra:
            raise InputMismatchError(f"{self.name}: missing inputs {missing}, unexpected {extra}; "
                                     f"expected {list(self.input_names)}")
        sizes: dict[str, int] = {}
        for spec in self.inputs:
            value = feeds[spec.name]
            dtype = str(getattr(value, "dtype", type(value).__name__)).replace("torch.", "")
            if dtype != spec.dtype:
                raise InputMismatchError(f"{self.name}: input {spec.name!r} has dtype {dtype}, "
                                         f"expected {spec.dtype}")
            shape = tuple(int(d) for d in value.shape)
            if len(shape) != len(spec.shape):
                raise InputMismatchError(f"{self.name}: input {spec.name!r} has shape {shape}, "
                                         f"expected {list(spec.shape)}")
            for got, want in zip(shape, spec.shape, strict=True):
                if isinstance(want, int):
                    if got != want:
                        raise InputMismatchError(f"{self.name}: input {spec.name!r} has shape "
                                                 f"{shape}, expected {list(spec.shape)}")
                    continue
                if sizes.setdefault(want, got) != got:
                    raise InputMismatchError(f"{self.name}: axis {want!r} is {sizes[want]} "
                                             f"elsewhere but {got} in {spec.name!r}")
        for name, size in sizes.items():
            lo, hi = (limits or {}).get(name, (1, 1 << 31))
            if not lo <= size <= hi:
                raise InputMismatchError(f"{self.name}: {name} = {size} is outside {lo}..{hi}")
        return sizes

    def example_feeds(self, sizes: Mapping[str, int], seed: int = 0) -> dict[str, np.ndarray]:
        """Random feeds of the right dtypes and shapes (for warm-up, tests, parity)."""
        rng = np.random.default_rng(seed)
        out = {}
        for spec in self.inputs:
            shape = [d if isinstance(d, int) else sizes[d] for d in spec.shape]
            if spec.dtype.startswith("int"):
                out[spec.name] = np.zeros(shape, dtype=spec.dtype)
            else:
                out[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        return out
