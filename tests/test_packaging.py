"""The installed package is the checkout: ``pip install .`` gives every module, the model and
the browser client, and serving imports nothing of ``export/``.

Why these checks: the folders are mapped onto one ``vivify`` namespace by setup.py, so a
folder that is not a package (no ``__init__.py``) or a data file that package-data does not
name is silently left out of the wheel, while the editable install the tests run under still
finds it. And ``vivify serve`` must run with the serving dependencies only: ``export/`` (torch,
onnx) is for training and export, and engines/ is the layer below streamer/.

The wheel is built from a copy of the files a build reads (setup.py, pyproject.toml, README.md
and the packaged folders), so no stale ``build/lib`` of the checkout ends up in it and nothing
is written into the checkout. The slow test installs it with ``pip install --target`` and runs
it with ``python -S`` from an unrelated folder: no site-packages processing, hence no
editable-install finder that could serve the checkout instead of the installed copy; the
test venv's site-packages is on PYTHONPATH for the dependencies only.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.media import sine_wav
from tests.support.net import free_port
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("streamer", "engines", "export", "models", "client_web")  # as in setup.py
BUILD_FILES = ("setup.py", "pyproject.toml", "README.md")
PACKAGE_DATA = {"models": ("*.onnx", "*.json"), "client_web": ("*.html", "*.js", "*.css"),
                "streamer": ("py.typed",), "engines": ("py.typed",)}  # as in pyproject.toml
# The one place under streamer/ that may import vivify.export: the `vivify export` command,
# inside the function that runs it (it tells the user to install the export extra otherwise).
EXPORT_COMMAND = "streamer/cli/export.py"
# What the serving commands import when they start (the rest is imported by these).
SERVING_MODULES = ("vivify.streamer.cli.main", "vivify.streamer.server.serve",
                   "vivify.streamer.server.app", "vivify.streamer.offline.render")
# Import names of what only pyproject.toml's extras install (export, talk, livekit, pipecat,
# dev); a module the serving start imports must not be one of them.
TORCH_MODULES = "engines/runtimes/torch_models/"  # nn.Module definitions, loaded by name only
# Import names that only an extra installs (pyproject.toml's optional-dependencies).
EXTRAS_ONLY = ("torch", "onnx", "polygraphy", "librosa", "soundfile", "pyaudio", "ray",
               "livekit", "pipecat", "matplotlib", "playwright", "hypothesis", "pytest")
BUILD_TIMEOUT_S = 300
SERVE_TIMEOUT_S = 60


def _source_files(root: str) -> Iterator[Path]:
    """The checkout's files under one packaged folder (caches left out)."""
    for path in sorted((REPO / root).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            yield path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # --no-build-isolation: the build backend of pyproject.toml from this venv, no download
    pytest.importorskip("setuptools", minversion="77", reason="the build needs setuptools>=77")
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_FILES:
        shutil.copy2(REPO / name, src / name)
    for root in ROOTS:
        shutil.copytree(REPO / root, src / root,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                         capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    (built,) = dist.glob("vivify-*.whl")
    return built


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_holds_every_module_and_the_package_data(wheel: Path) -> None:
    names = _wheel_names(wheel)
    missing = [str(p.relative_to(REPO)) for root in ("streamer", "engines", "export")
               for p in _source_files(root)
               if p.suffix == ".py" and f"vivify/{p.relative_to(REPO).as_posix()}" not in names]
    assert not missing, f"not in the wheel (a folder without __init__.py?): {missing}"
    for root, patterns in PACKAGE_DATA.items():
        data = [p for pattern in patterns for p in (REPO / root).glob(pattern)]
        assert data, f"{root}/ has no {patterns}"
        absent = [p.name for p in data if f"vivify/{root}/{p.name}" not in names]
        assert not absent, f"package data left out of vivify.{root}: {absent}"
    for required in ("vivify/models/motion_generator.onnx", "vivify/models/motion_generator.json",
                     "vivify/client_web/index.html"):
        assert required in names


def test_wheel_has_only_the_vivify_namespace(wheel: Path) -> None:
    tops = {name.split("/", 1)[0] for name in _wheel_names(wheel)}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"vivify"}, tops
    with zipfile.ZipFile(wheel) as zf:
        (info,) = dist_info
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    assert "vivify = vivify.streamer.cli.main:main" in entry_points


def _imports(path: Path) -> Iterator[tuple[str, bool]]:
    """(module imported, at module level) for every absolute import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, id(node) in top) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, id(node) in top


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_layer_rules_serving_never_imports_export_or_torch_and_engines_never_streamer() -> None:
    wrong: list[str] = []
    for root in ("streamer", "engines"):
        for path in _source_files(root):
            if path.suffix != ".py":
                continue
            rel = path.relative_to(REPO).as_posix()
            for module, module_level in _imports(path):
                if _under(module, "vivify.export") and (module_level or rel != EXPORT_COMMAND):
                    wrong.append(f"{rel} imports {module}")
                if root == "engines" and _under(module, "vivify.streamer"):
                    wrong.append(f"{rel} imports {module} (engines/ is the layer below)")
                if (_under(module, "torch") and module_level
                        and not rel.startswith(TORCH_MODULES)):
                    wrong.append(f"{rel} imports torch at module level (only {TORCH_MODULES} "
                                 "may: the torch runtime loads it by name)")
    assert not wrong, "\n".join(wrong)


def test_serving_starts_on_the_core_dependencies() -> None:
    """The import-time side of the rule above, through every import the start runs: what the
    ``vivify`` command, ``vivify serve`` and ``vivify render`` load holds no ``vivify.export``
    and nothing that only an extra installs (the test venv has them all, so a plain
    ``pip install .`` would fail where this venv does not)."""
    probe = ("import sys\n"
             f"for name in {SERVING_MODULES!r}:\n"
             "    __import__(name)\n"
             f"extras = {EXTRAS_ONLY!r}\n"
             "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in extras}\n"
             "             | {m for m in sys.modules if m.startswith('vivify.export')}))\n")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "[]", f"loaded at start: {run.stdout.strip()}"


def _installed_env(target: Path, home: Path) -> dict[str, str]:
    """``python -S`` on the installed copy: dependencies from the test venv's site-packages,
    which is put after it on the path without its .pth files (the editable finder)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), sysconfig.get_paths()["purelib"],
                                         sysconfig.get_paths()["platlib"]])
    env["VIVIFY_HOME"] = str(home)
    return env


def _vivify(*args: str) -> list[str]:
    return [sys.executable, "-S", "-c",
            "import sys; from vivify.streamer.cli.main import main; sys.exit(main())", *args]


@pytest.mark.slow
def test_installed_wheel_renders_and_serves_from_another_folder(
        wheel: Path, face_models: Path, tmp_path: Path) -> None:
    target, home, work = tmp_path / "site", tmp_path / "home", tmp_path / "elsewhere"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                          "-q", "--target", str(target), str(wheel)],
                         capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    (home / "models").mkdir(parents=True)  # the fetched face models; the rest made fresh
    (home / "models" / face_models.name).symlink_to(face_models, target_is_directory=True)
    work.mkdir()
    env = _installed_env(target, home)

    where = subprocess.run([sys.executable, "-S", "-c",
                            "import vivify.streamer, vivify.models; "
                            "print(vivify.streamer.__file__); print(vivify.models.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert where.returncode == 0, where.stderr[-3000:]
    assert all(Path(p).is_relative_to(target) for p in where.stdout.split()), where.stdout

    audio = sine_wav(work / "tone.wav", freq=220.0, seconds=1.0)
    render = subprocess.run(_vivify("render", "--portrait", "default", "--audio", audio.name,
                                    "--driver", "learned", "-o", "out.mp4"),
                            cwd=work, env=env, capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT_S, check=False)
    assert render.returncode == 0, render.stderr[-3000:]
    assert (work / "out.mp4").stat().st_size > 0

    port = free_port()
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen(_vivify("serve", "--port", str(port)), cwd=work, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    return True
            except OSError:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                return False

        wait_until(up, timeout=SERVE_TIMEOUT_S, what="vivify serve to answer /healthz")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            body = page.read().decode()
        assert page.status == 200 and "<title>Vivify" in body
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert not list(work.glob("artifacts")), "the installed server wrote into its working folder"
