"""ServerConfig's one table: every field settable by flag and by ``VIVIFY_*`` environment,
validated at start, and documented in docs/api.md exactly as the dataclass says."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from vivify.streamer.cli.main import build_parser, main
from vivify.streamer.server.config import (
    ServerConfig,
    Setting,
    add_arguments,
    default_of,
    markdown_table,
    settings,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "api.md"

# One valid, non-default value per field (together: a valid configuration). A new field
# without a sample here fails test_every_field_has_a_sample: add one.
SAMPLES: dict[str, Any] = {
    "host": "0.0.0.0", "port": 9000, "tls_cert": Path("/tmp/cert.pem"),
    "tls_key": Path("/tmp/key.pem"), "token": "s3cret",
    "cors_origins": ("https://a.test", "https://b.test"), "ice_servers": ("stun:s.test:3478",),
    "max_sessions": 3, "max_viewers_per_session": 4, "sfu_url": "http://127.0.0.1:8088/janus",
    "sfu_public_url": "https://sfu.test/janus", "sfu_admin_key": "k3y", "max_upload_bytes": 1000,
    "max_ws_buffer_seconds": 30.0, "session_idle_timeout": 0.0, "size": 256,
    "audio_prefetch_frames": 2, "playout_depth_frames": 5, "disclosure_label": "always",
    "label_text": "Synthetic", "driver": "baseline", "max_batch": 8, "runtime": "ort-cpu",
    "generator": Path("x/motion_generator.json"),
    "renderer": "graph", "renderer_model": Path("x/renderer.json"),
    "renderer_runtime": "ort-cpu", "max_render_batch": 16, "workers": 3,
}


def _serve_args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def _as_flags(values: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for name, value in values.items():
        spec = settings()[name]
        for item in (value if spec.many else (value,)):
            argv += [spec.flag, str(item)]
    return argv


def _as_env(values: dict[str, Any]) -> dict[str, str]:
    return {settings()[name].env_name: ",".join(v) if settings()[name].many else str(v)
            for name, v in values.items()}


def test_every_field_has_one_setting_with_its_own_flag_and_variable() -> None:
    table = settings()
    assert list(table) == [f.name for f in fields(ServerConfig)]
    assert all(isinstance(s, Setting) for s in table.values())
    flags = [s.flag for s in table.values()]
    envs = [s.env_name for s in table.values()]
    assert len(set(flags)) == len(flags) and len(set(envs)) == len(envs)
    assert all(f.startswith("--") for f in flags)
    assert all(e.startswith("VIVIFY_") and e.isupper() for e in envs)
    assert all(s.help and "%" not in s.help for s in table.values())


def test_the_frame_rate_is_not_a_setting() -> None:
    assert "fps" not in settings()
    with pytest.raises(SystemExit):
        _serve_args(["--fps", "25"])


def test_every_field_has_a_sample() -> None:
    assert set(SAMPLES) == set(settings())
    assert all(SAMPLES[name] != default_of(name) for name in SAMPLES)


def test_defaults_need_no_flag_and_no_variable() -> None:
    config = ServerConfig.from_args(_serve_args([]), environ={})
    assert config == ServerConfig()
    assert config.port == 8080 and config.token is None and config.cors_origins == ()


def test_every_field_is_set_by_its_flag() -> None:
    config = ServerConfig.from_args(_serve_args(_as_flags(SAMPLES)), environ={})
    assert {name: getattr(config, name) for name in SAMPLES} == SAMPLES


def test_every_field_is_set_by_its_variable() -> None:
    config = ServerConfig.from_env(_as_env(SAMPLES))
    assert {name: getattr(config, name) for name in SAMPLES} == SAMPLES


def test_a_flag_wins_over_the_variable_and_the_variable_over_the_default() -> None:
    env = {"VIVIFY_PORT": "9001", "VIVIFY_DRIVER": "baseline", "VIVIFY_CORS_ORIGINS": "https://e"}
    config = ServerConfig.from_args(_serve_args(["--port", "9002", "--cors", "https://f"]), env)
    assert config.port == 9002 and config.cors_origins == ("https://f",)
    assert config.driver == "baseline" and config.host == "127.0.0.1"


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVIFY_IDLE_TIMEOUT", "7.5")
    monkeypatch.setenv("VIVIFY_WORKERS", "2")
    config = ServerConfig.from_env(max_sessions=1, driver=None)  # None = not given
    assert config.session_idle_timeout == 7.5 and config.workers == 2
    assert config.max_sessions == 1 and config.driver == "learned"


def test_comma_separated_variables_skip_blanks() -> None:
    config = ServerConfig.from_env({"VIVIFY_ICE_SERVERS": " stun:a , ,turn:b ",
                                    "VIVIFY_CORS_ORIGINS": ""})
    assert config.ice_servers == ("stun:a", "turn:b") and config.cors_origins == ()


@pytest.mark.parametrize(("env", "says"), [
    ({"VIVIFY_PORT": "eighty"}, "VIVIFY_PORT='eighty': not a valid int"),
    ({"VIVIFY_IDLE_TIMEOUT": "soon"}, "VIVIFY_IDLE_TIMEOUT"),
    ({"VIVIFY_DRIVER": "magic"}, "VIVIFY_DRIVER='magic': choose one of learned, baseline"),
    ({"VIVIFY_TOKEN": ""}, "empty"),  # set but empty: refused, never "no token"
    ({"VIVIFY_TLS_CERT": "/tmp/c.pem"}, "tls_cert and tls_key go together"),
])
def test_bad_variables_are_refused_by_name(env: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        ServerConfig.from_env(env)


@pytest.mark.parametrize(("values", "says"), [
    ({"port": 0}, "port (--port, VIVIFY_PORT) must be within 1..65535, got 0"),
    ({"port": 70000}, "--port"),
    ({"token": "  "}, "must not be empty"),
    ({"session_idle_timeout": -1.0}, "--idle-timeout"),
    ({"session_idle_timeout": float("nan")}, "--idle-timeout"),
    ({"size": 250}, "multiple of 16"),
    ({"size": 2048}, "--size"),
    ({"driver": "magic"}, "driver (--driver, VIVIFY_DRIVER) must be learned or baseline"),
    ({"renderer": "gpu"}, "--renderer"),
    ({"disclosure_label": "sometimes"}, "disclosure_label"),
    ({"label_text": ""}, "--label-text"),
    ({"label_text": "two\nlines"}, "--label-text"),
    ({"max_batch": 0}, "--max-batch"),
    ({"max_render_batch": 257}, "--max-render-batch"),
    ({"audio_prefetch_frames": 9}, "--audio-prefetch"),
    ({"playout_depth_frames": 0}, "--playout-depth"),
    ({"max_sessions": -1}, "--max-sessions"),
    ({"max_viewers_per_session": 0}, "--max-viewers"),
    ({"max_upload_bytes": 0}, "--max-upload-bytes"),
    ({"max_ws_buffer_seconds": 0.0}, "--max-audio-ahead"),
    ({"workers": 0}, "--workers"),
    ({"tls_key": Path("k.pem")}, "go together"),
])
def test_bad_values_are_refused_at_construction(values: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError) as exc:
        ServerConfig(**values)
    assert says in str(exc.value)


@pytest.mark.parametrize(("argv", "says"), [
    (["--port", "0"], "--port"),
    (["--size", "100"], "--size"),
    (["--label-text", ""], "--label-text"),
    (["--tls-cert", "c.pem"], "go together"),
])
def test_serve_exits_2_with_the_reason(argv: list[str], says: str,
                                       capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for spec in settings().values():
        monkeypatch.delenv(spec.env_name, raising=False)
    assert main(["serve", *argv]) == 2
    assert says in capsys.readouterr().err


def test_a_bad_variable_makes_serve_exit_2(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIVIFY_MAX_SESSIONS", "many")
    assert main(["serve"]) == 2
    assert "VIVIFY_MAX_SESSIONS" in capsys.readouterr().err


def test_argparse_refuses_malformed_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--port", "x"], ["--driver", "magic"], ["--workers", "1.5"]):
        with pytest.raises(SystemExit) as exc:
            _serve_args(argv)
        assert exc.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_help_names_each_variable_and_default() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = " ".join(parser.format_help().split())
    for spec in settings().values():
        assert spec.flag in text and spec.env_name in text
    assert "default 8080" in text and "default the cores" in text


def _docs_table() -> str:
    text = DOCS.read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def test_the_docs_table_is_the_dataclass() -> None:
    assert _docs_table() == markdown_table(), (
        "docs/api.md's Configuration table is out of date: paste the output of "
        "`python -m vivify.streamer.server.config` into it")


def test_the_docs_table_has_one_row_per_field() -> None:
    rows = _docs_table().splitlines()[2:]
    assert len(rows) == len(settings())
    for row, spec in zip(rows, settings().values(), strict=True):
        assert f"`{spec.flag}" in row and f"`{spec.env_name}`" in row


# ---------------------------------------------------------------------------- the command line

def test_the_cli_starts_without_export_or_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, vivify.streamer.cli.main; "
            "print(sorted(m for m in sys.modules if m.startswith('vivify.export') "
            "or m in ('torch', 'onnx')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert run.stdout.strip() == "[]"


def test_export_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # "not installed"
    assert main(["export", "--out", "unused"]) == 2
    assert "pip install -e '.[export]'" in capsys.readouterr().err


def test_demo_without_a_voice_exits_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from vivify.engines.audio import espeak

    asked: list[tuple[Any, ...]] = []

    def speak_to_wav(text: str, path: Any, voice: str, speed: int) -> Path:
        asked.append((text, Path(path), voice, speed))
        raise espeak.VoiceUnavailable("espeak-ng is needed for this voice")

    monkeypatch.setattr(espeak, "speak_to_wav", speak_to_wav)
    assert main(["demo", "-o", str(tmp_path / "demo.mp4"), "--quiet"]) == 1
    assert "espeak-ng" in capsys.readouterr().err
    assert asked == [(asked[0][0], tmp_path / "demo.wav", espeak.DEFAULT_VOICE,
                      espeak.DEFAULT_SPEED)]
    assert not (tmp_path / "demo.mp4").exists()


def test_render_and_demo_take_no_fps() -> None:
    for command in (["render", "--portrait", "p", "--audio", "a", "-o", "o"], ["demo"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*command, "--fps", "25"])
