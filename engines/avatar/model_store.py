"""Where the MediaPipe face models live on disk, and how they get there.

Vivify runs five ``.tflite`` files from the MediaPipe 0.10.21 wheel (Apache-2.0) with LiteRT.
We do not depend on the ``mediapipe`` package itself (it pins numpy 1 and ships a 35 MB native
library we do not use); instead ``fetch_models`` downloads the wheel once with pip, pulls out
only these files, checks their SHA-256 and stores them in a per-user cache. Nothing downloads
at run time: ``model_path`` only looks in the cache and tells the user what to run if a file is
missing or damaged.

Cache layout: ``$VIVIFY_HOME/models`` (or ``~/.cache/vivify/models``) /
``mediapipe-0.10.21`` / ``<basename>.tflite``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

MEDIAPIPE_VERSION = "0.10.21"
# Any wheel of this release holds the same .tflite files; this one is pinned so the download
# is reproducible whatever machine runs the fetch.
WHEEL_PLATFORM = "manylinux_2_28_x86_64"
WHEEL_PYTHON_VERSION = "3.11"
HASH_CHUNK_BYTES = 1 << 20  # 1 MiB reads while hashing
SETUP_HINT = ("run `make setup` or `vivify fetch-models` "
              "(or `python -m vivify.engines.avatar.model_store`)")


@dataclass(frozen=True)
class ModelFile:
    """One model file: our short name, its path inside the wheel and its expected SHA-256."""

    name: str
    wheel_path: str
    sha256: str

    @property
    def basename(self) -> str:
        return self.wheel_path.rsplit("/", 1)[-1]


MODELS: dict[str, ModelFile] = {
    m.name: m
    for m in (
        ModelFile(
            "face_detection_short_range",
            "mediapipe/modules/face_detection/face_detection_short_range.tflite",
            "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        ),
        ModelFile(
            "face_detection_full_range_sparse",
            "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
            "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
        ),
        ModelFile(
            "face_landmark",
            "mediapipe/modules/face_landmark/face_landmark.tflite",
            "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
        ),
        ModelFile(
            "iris_landmark",
            "mediapipe/modules/iris_landmark/iris_landmark.tflite",
            "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
        ),
        ModelFile(
            "selfie_segmentation",
            "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
            "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
        ),
    )
}


class ModelsMissingError(RuntimeError):
    """A model file is absent or does not match its checksum; the fix is to fetch again."""


class ModelFetchError(RuntimeError):
    """Downloading or unpacking the MediaPipe wheel failed."""


# Files already hashed in this process, keyed by (path, size, mtime) so a replaced file is
# checked again while an unchanged one costs only a stat.
_verified: set[tuple[str, int, int]] = set()


def vivify_home() -> Path:
    """``$VIVIFY_HOME`` when set, else ``~/.cache/vivify`` (read at call time): the per-user
    folder of what Vivify makes once and reuses (face models, portraits, prepared avatars,
    engine caches), so an installed server writes nothing into its working folder."""
    home = os.environ.get("VIVIFY_HOME")
    if home:
        return Path(home).expanduser()
    return Path.home() / ".cache" / "vivify"


def default_cache_dir() -> Path:
    """``$VIVIFY_HOME/models`` when set, else ``~/.cache/vivify/models`` (read at call time)."""
    return vivify_home() / "models"


def models_dir(cache_dir: Path | None = None) -> Path:
    """The folder holding this MediaPipe release's files inside the cache."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return base / f"mediapipe-{MEDIAPIPE_VERSION}"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (model files are checked against manifests)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _is_valid(path: Path, model: ModelFile) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _verified:
        return True
    if sha256_file(path) != model.sha256:
        return False
    _verified.add(key)
    return True


def model_path(name: str, cache_dir: Path | None = None) -> Path:
    """Path of a verified model file; raises ``ModelsMissingError`` telling how to fetch it."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    model = MODELS[name]
    path = models_dir(cache_dir) / model.basename
    if not path.is_file():
        raise ModelsMissingError(f"face model {model.basename} not found at {path}; {SETUP_HINT}")
    if not _is_valid(path, model):
        raise ModelsMissingError(
            f"face model {path} is corrupt (SHA-256 mismatch); delete it and {SETUP_HINT}"
        )
    return path


def _download_wheel(dest: Path) -> Path:
    """Ask pip for the pinned wheel (binary only, no dependencies) and return its path."""
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:",
        "--platform", WHEEL_PLATFORM,
        "--python-version", WHEEL_PYTHON_VERSION,
        "--disable-pip-version-check",
        f"mediapipe=={MEDIAPIPE_VERSION}",
        "-d", str(dest),
    ]  # fmt: skip
    print(f"downloading mediapipe=={MEDIAPIPE_VERSION} wheel (~35 MB) for its face models ...")
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise ModelFetchError(
            f"`{' '.join(cmd)}` failed with exit code {result.returncode}; check the network "
            "access to PyPI, or pass a local wheel "
            "(`python -m vivify.engines.avatar.model_store --wheel F`)"
        )
    wheels = sorted(dest.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if not wheels:
        raise ModelFetchError(f"pip reported success but left no mediapipe wheel in {dest}")
    return wheels[0]


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary sibling and ``os.replace`` so readers never see half a file."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o644)  # mkstemp makes 0600; these are shared, read-only data files
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _extract(wheel: Path, missing: list[ModelFile], out_dir: Path) -> None:
    """Copy only the listed model files out of the wheel, each checked before it lands."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelFetchError(f"cannot open {wheel} as a wheel: {exc}") from exc
    with archive:
        names = set(archive.namelist())
        for model in missing:
            if model.wheel_path not in names:
                raise ModelFetchError(f"{wheel} has no {model.wheel_path}; wrong wheel?")
            data = archive.read(model.wheel_path)
            got = hashlib.sha256(data).hexdigest()
            if got != model.sha256:
                raise ModelFetchError(
                    f"SHA-256 mismatch for {model.wheel_path} in {wheel}: expected "
                    f"{model.sha256}, got {got}; the download is damaged or not the pinned "
                    f"mediapipe {MEDIAPIPE_VERSION} release"
                )
            _write_atomic(out_dir / model.basename, data)


def fetch_models(cache_dir: Path | None = None, wheel: Path | None = None) -> Path:
    """Make sure every model file is in the cache; return the folder holding them.

    Idempotent: when all files are present with the right checksum nothing is read from the
    network. Otherwise the files come from ``wheel`` (a local mediapipe wheel) or from a wheel
    downloaded with pip into a temporary folder that is removed afterwards.
    """
    out_dir = models_dir(cache_dir)
    missing = [m for m in MODELS.values() if not _is_valid(out_dir / m.basename, m)]
    if not missing:
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if wheel is not None:
        _extract(Path(wheel), missing, out_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="vivify-mediapipe-") as tmp:
            _extract(_download_wheel(Path(tmp)), missing, out_dir)
    for model in missing:  # re-check what landed (also fills the per-process cache)
        model_path(model.name, cache_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch the MediaPipe face models Vivify runs.")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: $VIVIFY_HOME/models")
    parser.add_argument("--wheel", type=Path, default=None, help="use this local mediapipe wheel")
    args = parser.parse_args(argv)
    try:
        out_dir = fetch_models(args.cache_dir, args.wheel)
    except ModelFetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"face models ready in {out_dir}")
    for model in MODELS.values():
        print(f"  {model.name:34s} {out_dir / model.basename}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
