"""Inference runtimes behind one runner interface (activate / infer / deactivate).

``select_runtime("auto")`` picks the best runtime present; ``create_runner`` builds it from a
model manifest. Heavy libraries (torch, TensorRT, Polygraphy) are imported lazily inside the
runner that needs them. See docs/engines.md.
"""

from vivify.engines.runtimes.base import Runner
from vivify.engines.runtimes.errors import InputMismatchError, MissingRuntimeError
from vivify.engines.runtimes.manifest import ManifestMismatchError, ModelManifest, TensorSpec
from vivify.engines.runtimes.ort_runner import OrtConfig, OrtRunner
from vivify.engines.runtimes.profiles import ProfileConfig, profile_shapes
from vivify.engines.runtimes.select import (
    RUNTIMES,
    Availability,
    RuntimeChoice,
    create_runner,
    probe,
    select_runtime,
)

__all__ = [
    "RUNTIMES", "Availability", "InputMismatchError", "ManifestMismatchError",
    "MissingRuntimeError", "ModelManifest", "OrtConfig", "OrtRunner", "ProfileConfig",
    "Runner", "RuntimeChoice", "TensorSpec", "create_runner", "probe", "profile_shapes",
    "select_runtime",
]
