"""Many sessions' frames in one call of the exported renderer graph: the GPU render path.

The CPU renderer (:mod:`vivify.engines.render.renderer`) renders one frame of one avatar per call,
which is
the fastest thing on a CPU. On a GPU the per-call cost (kernel launches, Python, the thread hop)
dominates a single 512² frame, so serving there stacks the frames that every session needs next
into one call of ``renderer.onnx`` (or its TensorRT engine, or its torch twin under CUDA
graphs). The avatars are inputs of that graph (the *bank*, ``vivify.engines.runtimes.renderer_bank``
says why), so one call mixes sessions of different portraits.

This class is the batcher's engine (``vivify.streamer.media.batcher.BatchRunner``): requests name
an avatar
by key and carry one motion vector and the session's provenance stamp; results are stamped
uint8 frames. Sessions ``attach`` their avatar when they start and ``detach`` it when they end.

Bank bookkeeping, and why it is lazy: the bank is pinned on the runner (on the device where the
runtime can), so changing it means re-uploading it. A detached avatar's row is therefore only
dropped at the next ``attach`` (which rebuilds the bank anyway), never under a render call that
may still hold a request for it. ``attach`` does the per-avatar numpy work (thin-plate matrix,
region check): call it off the event loop. ``detach`` is a counter and is safe on the loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vivify.engines.motion.vector import MOTION_DIM
from vivify.engines.provenance.stamp import ProvenanceStamp
from vivify.engines.runtimes import ModelManifest, Runner, create_runner
from vivify.engines.runtimes.errors import GraphUnavailableError
from vivify.engines.runtimes.renderer_bank import BANK_INPUTS, GraphGeometry, avatar_entry
from vivify.engines.runtimes.torch_runner import TorchRunner  # imports torch only when activated

if TYPE_CHECKING:  # the pack's type only: preparing avatars (LiteRT) is not needed to render
    from vivify.engines.avatar.pack import AvatarPack

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_RENDERER_MANIFEST", "GraphRenderer", "GraphUnavailableError",
           "RenderRequest", "to_uint8"]
DEFAULT_RENDERER_MANIFEST = Path("artifacts/engines/renderer.json")


@dataclass(frozen=True)
class RenderRequest:
    """One frame for one session: its avatar's key, its motion, its stamp."""

    avatar: str
    motion: np.ndarray  # (MOTION_DIM,) clipped motion vector
    stamp: ProvenanceStamp | None = None


@dataclass
class _Row:
    entry: dict[str, np.ndarray]
    refs: int = 0


@dataclass
class BankState:
    """Which avatar sits in which bank row; ``dirty`` until the runner holds this layout."""

    rows: dict[str, _Row] = field(default_factory=dict)
    index: dict[str, int] = field(default_factory=dict)
    dirty: bool = True


class GraphRenderer:
    """The renderer graph on one runner, shared by every session of a server."""

    def __init__(self, runner: Runner, geometry: GraphGeometry) -> None:
        self.runner = runner
        self.geometry = geometry
        runner.activate()
        self.max_avatars = runner.limits().get("avatars", (1, 1 << 16))[1]
        self.max_batch = runner.limits().get("batch", (1, 1 << 16))[1]
        self._bank = BankState()
        self._lock = threading.Lock()  # the bank and the runner: one render call at a time

    @classmethod
    def load(cls, manifest: Path | str = DEFAULT_RENDERER_MANIFEST, runtime: str = "auto",
             threads: int = 1) -> GraphRenderer:
        """Open ``renderer.json`` (sha256-checked) on ``runtime`` (``auto`` logs its choice)."""
        path = Path(manifest)
        if not path.is_file():
            raise GraphUnavailableError(
                f"no exported renderer graph at {path}: run `vivify export --out {path.parent}` "
                "(needs the export extra: pip install -e '.[export]')")
        model = ModelManifest.load(path)
        geometry = GraphGeometry(**model.raw.get("config", {}))
        return cls(create_runner(model, runtime, threads=threads), geometry)

    @property
    def runtime(self) -> str:
        return self.runner.runtime

    @property
    def avatars(self) -> dict[str, int]:
        """Attached avatars → how many sessions use each."""
        return {k: r.refs for k, r in self._bank.rows.items() if r.refs > 0}

    # ------------------------------------------------------------------ avatars
    def attach(self, key: str, pack: AvatarPack) -> None:
        """One more session uses ``pack`` under ``key``. ``ValueError`` if the graph cannot
        render it (size, rig, a layer outside its fixed region, a full bank): the caller then
        renders that session on the CPU renderer instead."""
        with self._lock:
            bank = self._bank
            row = bank.rows.get(key)
            if row is None:
                live = sum(1 for r in bank.rows.values() if r.refs > 0)
                if live >= self.max_avatars:
                    raise ValueError(f"the renderer graph's bank is full ({self.max_avatars} "
                                     "avatars, the engine profile's maximum)")
                row = _Row(avatar_entry(pack, self.geometry))  # ValueError if unsuitable
                # Rows nobody uses any more go now: the bank is rebuilt for the new row anyway.
                bank.rows = {k: r for k, r in bank.rows.items() if r.refs > 0}
                bank.rows[key] = row
                bank.dirty = True
            row.refs += 1

    def detach(self, key: str) -> None:
        """A session that attached ``key`` has ended (its row is dropped at a later attach)."""
        row = self._bank.rows.get(key)
        if row is not None and row.refs > 0:
            row.refs -= 1

    def _pin_bank(self) -> None:
        bank = self._bank
        keys = list(bank.rows)
        stacked = {n: np.stack([bank.rows[k].entry[n] for k in keys]) for n in BANK_INPUTS}
        self.runner.pin(stacked)
        bank.index = {k: i for i, k in enumerate(keys)}
        bank.dirty = False
        log.info("renderer graph bank: %d avatars pinned on %s", len(keys), self.runtime)

    # ------------------------------------------------------------------ rendering
    def render(self, motions: np.ndarray, avatars: Sequence[str]) -> np.ndarray:
        """(B, MOTION_DIM) motions of the named avatars → (B, S, S, 3) uint8 frames."""
        motions = np.ascontiguousarray(np.atleast_2d(motions), dtype=np.float32)
        if motions.shape[1:] != (MOTION_DIM,) or len(motions) != len(avatars):
            raise ValueError(f"motions {motions.shape} do not match {len(avatars)} avatars")
        if len(motions) > self.max_batch:  # larger than the engine's profile: split
            return np.concatenate([self.render(motions[i:i + self.max_batch],
                                               avatars[i:i + self.max_batch])
                                   for i in range(0, len(motions), self.max_batch)])
        with self._lock:
            if self._bank.dirty:
                self._pin_bank()
            try:
                rows = np.array([self._bank.index[a] for a in avatars], np.int32)
            except KeyError as exc:
                raise KeyError(f"avatar {exc.args[0]!r} is not attached to the renderer graph"
                               ) from None
            feeds = {"motion": motions, "avatar": rows}
            if isinstance(self.runner, TorchRunner):  # frames become uint8 on the device
                return self.runner.infer_uint8(feeds, "image")
            image = self.runner.infer(feeds)["image"]
        return to_uint8(image)

    def infer_requests(self, requests: list[RenderRequest]) -> list[np.ndarray]:
        """The batcher's call: every request's stamped frame, in order."""
        if not requests:
            return []
        frames = self.render(np.stack([r.motion for r in requests]),
                             [r.avatar for r in requests])
        out = []
        for frame, req in zip(frames, requests, strict=True):
            out.append(req.stamp.apply(frame, inplace=True) if req.stamp else frame)
        return out

    def close(self) -> None:
        with self._lock:
            self.runner.deactivate()
            self._bank = BankState()


def to_uint8(image: np.ndarray) -> np.ndarray:
    """The graph's image output as uint8 frames (it holds integers 0..255 in float32, or is
    already uint8 where the engine converts on the device)."""
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
