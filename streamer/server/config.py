"""Server settings: one frozen dataclass, filled from flags and ``VIVIFY_*`` environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vivify.engines.provenance.disclosure import DisclosureConfig


def _env(name: str, default: str) -> str:
    return os.environ.get(f"VIVIFY_{name}", default)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = None  # bearer token; None = open (bind to localhost then)
    cors_origins: tuple[str, ...] = ()
    ice_servers: tuple[str, ...] = ()  # STUN/TURN URLs; none = host candidates only
    max_sessions: int = 0  # 0 = measure the capacity at start
    max_viewers_per_session: int = 16
    max_upload_bytes: int = 25 * 1024 * 1024
    max_ws_buffer_seconds: float = 120.0  # audio an agent may queue ahead of playback
    # s unattended (no viewer, no connected peer, no audio playing, no API or WebSocket
    # message) before a session ends; 0 = never. `vivify serve --idle-timeout`.
    session_idle_timeout: float = 300.0
    fps: int = 25
    size: int = 512
    audio_prefetch_frames: int = 1  # incoming Opus packets held for reordering (aiortc: 4)
    playout_depth_frames: int = 3  # frames generated ahead of playback: the jitter buffer
    # Visible "AI-generated" label on streamed frames: "client" = each session request decides
    # (the browser client asks for it by default), "always", or "never". The invisible
    # watermark is on every frame whatever this says.
    disclosure_label: str = "client"
    label_text: str = "AI-generated"
    driver: str = "baseline"  # motion driver: baseline, or learned (batched across sessions)
    max_batch: int = 32  # learned driver: windows per engine call at most
    runtime: str = "auto"  # learned driver's engine: auto, or a name in
                           # vivify.engines.runtimes.RUNTIMES
    # Renderer: "cpu" = the numpy renderer per session (fastest on a CPU); "graph" = the
    # exported renderer graph, every session's frames batched into one call (the GPU path).
    renderer: str = "cpu"
    renderer_model: Path = Path("artifacts/engines/renderer.json")  # made by `vivify export`
    renderer_runtime: str = "auto"  # the graph's engine, as `runtime`
    max_render_batch: int = 64  # graph renderer: frames per call at most
    workers: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))

    def __post_init__(self) -> None:
        if self.token is not None and not self.token.strip():
            raise ValueError("the token must not be empty: omit --token to run without one")
        if not self.session_idle_timeout >= 0:  # also refuses NaN
            raise ValueError("idle timeout must be ≥ 0 seconds (0 = never)")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be within 1..65535, got {self.port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.fps != 25:
            raise ValueError("fps: only 25 is supported (the motion contract runs at 25 fps)")
        if self.size % 16 or not 128 <= self.size <= 1024:
            raise ValueError(f"size must be a multiple of 16 within 128..1024, got {self.size}")
        if self.driver not in ("baseline", "learned"):
            raise ValueError(f"driver must be baseline or learned, got {self.driver!r}")
        if self.renderer not in ("cpu", "graph"):
            raise ValueError(f"renderer must be cpu or graph, got {self.renderer!r}")
        if not 1 <= self.max_render_batch <= 256:
            raise ValueError(f"max_render_batch must be within 1..256, got {self.max_render_batch}")
        if not 1 <= self.max_batch <= 256:
            raise ValueError(f"max_batch must be within 1..256, got {self.max_batch}")
        if self.disclosure_label not in ("client", "always", "never"):
            raise ValueError("disclosure_label must be client, always or never, "
                             f"got {self.disclosure_label!r}")
        DisclosureConfig(text=self.label_text)  # ValueError on empty, long or multi-line text
        if not 0 <= self.audio_prefetch_frames <= 8:
            raise ValueError("audio_prefetch_frames must be within 0..8")
        if not 1 <= self.playout_depth_frames <= 25:
            raise ValueError("playout_depth_frames must be within 1..25")

    @classmethod
    def from_env(cls, **overrides: object) -> ServerConfig:
        """Defaults ← ``VIVIFY_*`` environment ← explicit overrides (flags)."""
        values: dict[str, object] = {
            "host": _env("HOST", cls.host),
            "port": int(_env("PORT", str(cls.port))),
            "token": os.environ.get("VIVIFY_TOKEN"),  # set but empty: refused, not "open"
            "session_idle_timeout": float(_env("IDLE_TIMEOUT", str(cls.session_idle_timeout))),
            "cors_origins": tuple(o for o in _env("CORS_ORIGINS", "").split(",") if o),
            "ice_servers": tuple(u for u in _env("ICE_SERVERS", "").split(",") if u),
            "max_sessions": int(_env("MAX_SESSIONS", "0")),
            "disclosure_label": _env("LABEL", cls.disclosure_label),
            "driver": _env("DRIVER", cls.driver),
            "runtime": _env("RUNTIME", cls.runtime),
            "renderer": _env("RENDERER", cls.renderer),
            "renderer_model": Path(_env("RENDERER_MODEL", str(cls.renderer_model))),
            "renderer_runtime": _env("RENDERER_RUNTIME", cls.renderer_runtime),
            "playout_depth_frames": int(_env("PLAYOUT_DEPTH", str(cls.playout_depth_frames))),
            "audio_prefetch_frames": int(_env("AUDIO_PREFETCH",
                                              str(cls.audio_prefetch_frames))),
            "label_text": _env("LABEL_TEXT", cls.label_text),
        }
        if os.environ.get("VIVIFY_TLS_CERT"):
            values["tls_cert"] = Path(os.environ["VIVIFY_TLS_CERT"])
            values["tls_key"] = Path(os.environ.get("VIVIFY_TLS_KEY", ""))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
