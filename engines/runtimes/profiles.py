"""Optimisation-profile shapes for engines with named dynamic axes (TensorRT, TensorRT EP).

An engine is built for a range per dynamic axis: ``batch`` 1…max (one row per session) and, for
the renderer, ``avatars`` 1…max (the bank). Pure functions of the manifest, so they are tested
without TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vivify.engines.runtimes.manifest import ModelManifest


@dataclass(frozen=True)
class ProfileConfig:
    """min/opt/max per named axis; axes not listed get ``default``."""

    axes: dict[str, tuple[int, int, int]] = field(default_factory=lambda: {
        "batch": (1, 8, 64), "avatars": (1, 4, 16)})
    default: tuple[int, int, int] = (1, 1, 1)

    def __post_init__(self) -> None:
        for name, rng in (*self.axes.items(), ("default", self.default)):
            lo, opt, hi = rng
            if not 1 <= lo <= opt <= hi:
                raise ValueError(f"profile for {name!r} must satisfy 1 ≤ min ≤ opt ≤ max, "
                                 f"got {rng}")

    def ranges(self, manifest: ModelManifest) -> dict[str, tuple[int, int, int]]:
        return {d: self.axes.get(d, self.default) for d in manifest.dynamic_dims()}

    def key(self) -> str:
        return ";".join(f"{k}={v}" for k, v in sorted(self.axes.items())) + f";*={self.default}"


def profile_shapes(manifest: ModelManifest, config: ProfileConfig
                   ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Per input: (min shape, opt shape, max shape)."""
    ranges = config.ranges(manifest)
    out = {}
    for spec in manifest.inputs:
        dims = [[d, d, d] if isinstance(d, int) else list(ranges[d]) for d in spec.shape]
        out[spec.name] = tuple(tuple(dim[k] for dim in dims) for k in range(3))
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}
