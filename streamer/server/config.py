"""Server settings: one frozen dataclass, and one table that says how to set each field.

Every field of :class:`ServerConfig` carries its :class:`Setting` (flag, ``VIVIFY_*``
environment variable, help text, parser, check) in its metadata. ``vivify serve``'s flags
(:func:`add_arguments`), the environment reading (:meth:`ServerConfig.from_env`), the start-up
validation and the "Configuration" table of docs/api.md (:func:`markdown_table`, compared with
the docs by tests/test_config.py) are all generated from it, so none of them can drift.

Precedence: defaults ← ``VIVIFY_*`` environment ← flags. The frame rate is not a setting: the
motion contract runs at :data:`vivify.engines.audio.audio_io.FPS` (25).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from vivify.engines.provenance.disclosure import DisclosureConfig

ENV_PREFIX = "VIVIFY_"
Check = Callable[[Any], "str | None"]  # the problem with a value, or None when it is fine


@dataclass(frozen=True)
class Setting:
    """How one :class:`ServerConfig` field is set, explained and checked."""

    flag: str  # e.g. "--port"
    env: str  # the variable's name after ``VIVIFY_``, e.g. "PORT"
    help: str  # one text for ``--help`` and for the docs table
    parse: Callable[[str], Any] = str  # one flag value or one environment value → field value
    many: bool = False  # a tuple: the flag repeats, the variable is comma-separated
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    check: Check | None = None
    shown_default: str | None = None  # for the docs when the default is computed

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this setting, or None."""
        if self.choices is not None and value not in self.choices:
            return f"must be {', '.join(self.choices[:-1])} or {self.choices[-1]}, got {value!r}"
        return self.check(value) if self.check is not None else None

    @property
    def value_name(self) -> str:
        """The flag's metavar: given, or N for counts, SECONDS for times, else the flag."""
        if self.metavar is not None:
            return self.metavar
        return {int: "N", float: "SECONDS"}.get(self.parse,  # type: ignore[call-overload]
                                                 self.flag.lstrip("-").upper())

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + self.env

    def parse_env(self, raw: str) -> Any:
        """The value of the variable, or ValueError naming it."""
        if self.many:
            return tuple(self._parse_one(v.strip()) for v in raw.split(",") if v.strip())
        return self._parse_one(raw)

    def _parse_one(self, raw: str) -> Any:
        if self.choices is not None and raw not in self.choices:
            raise ValueError(f"{self.env_name}={raw!r}: choose one of {', '.join(self.choices)}")
        try:
            return self.parse(raw)
        except ValueError:
            kind = getattr(self.parse, "__name__", "value")
            raise ValueError(f"{self.env_name}={raw!r}: not a valid {kind}") from None


def setting(default: Any = MISSING, *, factory: Callable[[], Any] | None = None,
            **meta: Any) -> Any:
    """A dataclass field whose metadata is its :class:`Setting`."""
    if factory is not None:
        return field(default_factory=factory, metadata={"setting": Setting(**meta)})
    return field(default=default, metadata={"setting": Setting(**meta)})


def optional_path(raw: str) -> Path | None:
    """A path, or None for an empty value (an unset ``VIVIFY_TLS_CERT=``)."""
    return Path(raw) if raw else None


def _within(low: float, high: float) -> Check:
    def check(value: Any) -> str | None:
        if not low <= value <= high:  # also refuses NaN
            return f"must be within {low:g}..{high:g}, got {value}"
        return None
    return check


def _at_least(low: float, what: str = "") -> Check:
    def check(value: Any) -> str | None:
        if not value >= low:  # also refuses NaN
            return f"must be ≥ {low:g}{what}, got {value}"
        return None
    return check


def _token(value: str | None) -> str | None:
    if value is not None and not value.strip():
        return "must not be empty: omit it to run without a token"
    return None


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        return f"must be an http:// or https:// URL, got {value!r}"
    return None


def _size(value: int) -> str | None:
    if value % 16 or not 128 <= value <= 1024:
        return f"must be a multiple of 16 within 128..1024, got {value}"
    return None


def _label_text(value: str) -> str | None:
    try:
        DisclosureConfig(text=value)  # ValueError on empty, long or multi-line text
    except ValueError as exc:
        return str(exc)
    return None


def _cores() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ServerConfig:
    """What ``vivify serve`` runs with. Constructing one validates it (ValueError)."""

    host: str = setting("127.0.0.1", flag="--host", env="HOST", metavar="ADDRESS",
                        help="bind address")
    port: int = setting(8080, flag="--port", env="PORT", parse=int, help="port",
                        check=_within(1, 65535))
    # setting() is dataclasses.field() with metadata (RUF009 sees only a call).
    tls_cert: Path | None = setting(  # noqa: RUF009
        None, flag="--tls-cert", env="TLS_CERT", parse=optional_path, metavar="PATH",
        help="TLS certificate, with --tls-key: HTTPS (browsers allow the microphone only on "
             "https or localhost)")
    tls_key: Path | None = setting(  # noqa: RUF009
        None, flag="--tls-key", env="TLS_KEY", parse=optional_path, metavar="PATH",
        help="TLS private key, with --tls-cert")
    token: str | None = setting(
        None, flag="--token", env="TOKEN", check=_token, metavar="TOKEN",
        help="require `Authorization: Bearer <token>` on /v1/* except the avatar preview "
             "(WebSocket: ?token= or the header), compared in constant time; none = open "
             "(bind to localhost then); an empty token is refused")
    cors_origins: tuple[str, ...] = setting(
        (), flag="--cors", env="CORS_ORIGINS", many=True, metavar="ORIGIN",
        help="allowed CORS origin (repeatable; the variable is comma-separated)")
    ice_servers: tuple[str, ...] = setting(
        (), flag="--ice-server", env="ICE_SERVERS", many=True, metavar="URL",
        help="STUN/TURN server for WebRTC, e.g. stun:stun.example.org:3478 (repeatable; the "
             "variable is comma-separated and clients read it too); none = host candidates "
             "only")
    max_sessions: int = setting(0, flag="--max-sessions", env="MAX_SESSIONS", parse=int,
                                check=_at_least(0),
                                help="admission limit; 0 = measure the capacity at start")
    max_viewers_per_session: int = setting(16, flag="--max-viewers", env="MAX_VIEWERS",
                                           parse=int, check=_at_least(1),
                                           help="broadcast viewers per session at most")
    sfu_url: str | None = setting(
        None, flag="--sfu-url", env="SFU_URL", check=_http_url, metavar="URL",
        help="a Janus gateway's HTTP API, e.g. http://127.0.0.1:8088/janus: each broadcast "
             "publishes once into a VideoRoom there and its JSON says where viewers subscribe "
             "(docs/scale-out.md); none = viewers join this server only")
    sfu_public_url: str | None = setting(
        None, flag="--sfu-public-url", env="SFU_PUBLIC_URL", check=_http_url, metavar="URL",
        help="the Janus URL viewers' browsers use, when it is not --sfu-url")
    sfu_admin_key: str | None = setting(
        None, flag="--sfu-admin-key", env="SFU_ADMIN_KEY", metavar="KEY",
        help="the VideoRoom admin_key, when Janus requires one to create rooms")
    max_upload_bytes: int = setting(25 * 1024 * 1024, flag="--max-upload-bytes",
                                    env="MAX_UPLOAD_BYTES", parse=int, check=_at_least(1),
                                    shown_default="26214400 (25 MiB)",
                                    help="largest portrait upload, bytes")
    max_ws_buffer_seconds: float = setting(
        120.0, flag="--max-audio-ahead", env="MAX_AUDIO_AHEAD", parse=float, metavar="SECONDS",
        check=_at_least(1, " s"), help="audio an agent may queue ahead of playback, seconds")
    session_idle_timeout: float = setting(
        300.0, flag="--idle-timeout", env="IDLE_TIMEOUT", parse=float, metavar="SECONDS",
        check=_at_least(0, " s (0 = never)"),
        help="end a session unattended this long: no viewer, no connected peer, no audio "
             "playing, no API or WebSocket message (a broadcast with no presenter audio and no "
             "viewers is idle, whoever holds its WebSocket); 0 = never")
    size: int = setting(512, flag="--size", env="SIZE", parse=int, check=_size,
                        help="side of the streamed face video, pixels (a multiple of 16, "
                             "128..1024); session requests must ask for this size")
    audio_prefetch_frames: int = setting(
        0, flag="--audio-prefetch", env="AUDIO_PREFETCH", parse=int, check=_within(0, 8),
        help="incoming Opus packets held for reordering (aiortc's own: 4); 0 = none, each "
             "packet is decoded as it arrives and a late one is dropped like a lost one")
    playout_depth_frames: int = setting(
        3, flag="--playout-depth", env="PLAYOUT_DEPTH", parse=int, check=_within(1, 25),
        help="frames generated ahead of playback: the jitter buffer (latency vs. tolerance of "
             "slow steps)")
    disclosure_label: str = setting(
        "client", flag="--label", env="LABEL", choices=("client", "always", "never"),
        help='visible "AI-generated" label on streamed frames: each session request decides '
             '(client: its "label", on by default), always, or never. The invisible '
             "watermark is on every frame regardless")
    label_text: str = setting("AI-generated", flag="--label-text", env="LABEL_TEXT",
                              check=_label_text, metavar="TEXT",
                              help="the label's text (one line, ≤ 64 characters)")
    driver: str = setting(
        "learned", flag="--driver", env="DRIVER", choices=("learned", "baseline"),
        help="motion driver; learned = the ONNX generator (lips from the audio: closures on "
             "p/b/m, rest in silence), its windows batched across sessions; baseline = the "
             "energy-driven driver (the lowest latency, lips do not close on p/b/m)")
    generator: Path | None = setting(None, flag="--generator", env="GENERATOR",  # noqa: RUF009
                                     parse=optional_path, metavar="PATH",
                                     shown_default="the packaged model",
                                     help="learned driver: the generator's manifest "
                                          "(sha256-checked), e.g. another lookahead from "
                                          "the recipe; empty = models/motion_generator.json")
    max_batch: int = setting(32, flag="--max-batch", env="MAX_BATCH", parse=int,
                             check=_within(1, 256),
                             help="learned driver: windows per engine call at most")
    runtime: str = setting(
        "auto", flag="--runtime", env="RUNTIME", metavar="NAME",
        help="the learned driver's engine: auto takes the best present (tensorrt, "
             "ort-tensorrt, torch-cuda, ort-cuda, ort-cpu) and logs why; see docs/engines.md")
    renderer: str = setting(
        "cpu", flag="--renderer", env="RENDERER", choices=("cpu", "graph"),
        help="cpu = the numpy renderer per session (fastest on a CPU); graph = the exported "
             "renderer graph, every session's frames batched into one call (the GPU path; run "
             "`vivify export` first), see docs/engines.md")
    renderer_model: Path = setting(Path("artifacts/engines/renderer.json"),  # noqa: RUF009
                                   flag="--renderer-model", env="RENDERER_MODEL", parse=Path,
                                   metavar="PATH",
                                   help="the renderer graph's manifest (sha256-checked), made "
                                        "by `vivify export`")
    renderer_runtime: str = setting("auto", flag="--renderer-runtime", env="RENDERER_RUNTIME",
                                    metavar="NAME", help="the graph's engine, as --runtime")
    max_render_batch: int = setting(64, flag="--max-render-batch", env="MAX_RENDER_BATCH",
                                    parse=int, check=_within(1, 256),
                                    help="graph renderer: frames per call at most")
    workers: int = setting(factory=_cores, flag="--workers", env="WORKERS", parse=int,
                           check=_at_least(1), shown_default="the cores",
                           help="inference threads")

    def __post_init__(self) -> None:
        for name, spec in settings().items():
            problem = spec.problem(getattr(self, name))
            if problem:
                raise ValueError(f"{name} ({spec.flag}, {spec.env_name}) {problem}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together (--tls-cert with --tls-key, "
                             "VIVIFY_TLS_CERT with VIVIFY_TLS_KEY)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 **overrides: object) -> ServerConfig:
        """Defaults ← ``VIVIFY_*`` environment ← explicit ``overrides`` (None = not given).

        A variable that is set counts, even empty: ``VIVIFY_TOKEN=`` is refused, not "open".
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {name: spec.parse_env(env[spec.env_name])
                                     for name, spec in settings().items() if spec.env_name in env}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_args(cls, args: argparse.Namespace,
                  environ: Mapping[str, str] | None = None) -> ServerConfig:
        """The flags :func:`add_arguments` added, over the environment."""
        given = {name: getattr(args, name, None) for name in settings()}
        return cls.from_env(environ, **{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in given.items()})


def settings() -> dict[str, Setting]:
    """Field name → its :class:`Setting`, in the dataclass's order."""
    return {f.name: f.metadata["setting"] for f in fields(ServerConfig)}


def default_of(name: str) -> Any:
    f = next(f for f in fields(ServerConfig) if f.name == name)
    return f.default_factory() if f.default_factory is not MISSING else f.default


def shown_default(name: str) -> str:
    """The default as the docs and ``--help`` write it."""
    spec = settings()[name]
    if spec.shown_default is not None:
        return spec.shown_default
    value = default_of(name)
    if value is None or value == ():
        return "none"
    return str(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; each defaults to None (= not given), so the environment and the
    dataclass defaults show through."""
    for name, spec in settings().items():
        kwargs: dict[str, Any] = {"dest": name, "default": None,
                                  "help": f"{spec.help} ({spec.env_name}; default "
                                          f"{shown_default(name)})".replace("%", "%%")}
        if spec.many:
            kwargs["action"] = "append"
        if spec.choices is not None:
            kwargs["choices"] = spec.choices
        else:
            kwargs["type"] = spec.parse
            kwargs["metavar"] = spec.value_name
        parser.add_argument(spec.flag, **kwargs)


TABLE_HEADER = ("| flag | env | default | meaning |", "| --- | --- | --- | --- |")


def markdown_rows() -> Iterator[str]:
    for name, spec in settings().items():
        values = "\\|".join(spec.choices) if spec.choices is not None else spec.value_name
        flag = f"{spec.flag} {values}"
        repeat = " (repeatable)" if spec.many else ""
        yield (f"| `{flag}`{repeat} | `{spec.env_name}` | {shown_default(name)} | "
               f"{spec.help} |")


def markdown_table() -> str:
    """The "Configuration" table of docs/api.md (``python -m vivify.streamer.server.config``
    prints it)."""
    return "\n".join((*TABLE_HEADER, *markdown_rows()))


if __name__ == "__main__":
    print(markdown_table())
