"""``make fuzz`` as a test: bench/fuzz/'s hostile client against a real ``vivify serve``.

Every case of issue 15 (non-finite controls, deep and huge frames, WebSocket auth, bodies
before auth, admission on a cold avatar, idle sessions, malformed SDP, a pixel bomb, Origin,
memory, SIGTERM, secrets in the log) must pass; the probe bounds each case in time and kills
its server whatever happens.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.fuzz import run_probe

pytestmark = pytest.mark.slow


def test_hostile_client_probe(face_models: Path, tmp_path: Path) -> None:
    report = run_probe(tmp_path / "fuzz.json", quick=True, models_root=face_models.parent)
    failed = [c for c in report["cases"] if not c["passed"]]
    for c in failed:
        print(f"FAIL {c['name']}: {c['observed']}")
    assert report["cases"], "the probe ran no case"
    assert not failed, "cases failed:\n" + "\n".join(f"  {c['name']}: {c['observed']}"
                                                     for c in failed)
