"""``python -m vivify.export.holdout_eval``: lip-sync on sources never trained on, scored on video.

One table per held-out source — espeak-ng's evaluation voices, the festival voices and the
klettres languages export/data/build.py keeps out of training — clean and through Opus
16 kbit/s, for each model given (generator manifests, ``baseline``, and ``labels``: the
training targets of the source's own phone times rendered directly, the ceiling of any model):
bilabials closed, open vowels opened, opening p90, silence at rest, lag (export/video_eval.py:
the outside judge's definitions on the rendered frames, phone times from the source itself).

``--split validation`` scores the *training* voices (espeak-ng's, festival's, klettres'
training languages) on the evaluation sentences instead: the split any tuning (sampling
noise, calibration) may look at, so that the held-out tables stay a test (klettres has no
sentences: its validation clips are training recordings, joined in new orders).

Output: ``--out`` (default ``artifacts/holdout``)/report.json and report.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from vivify.export import video_eval as ve
from vivify.export.data import build as corpus
from vivify.export.data import labels as lab

RATE = 16_000
STRIDE = 5  # validation: the training voices are many; a stride visits many in a few clips
Clip = tuple[np.ndarray, list[tuple[float, float, str]]]


def _nth(items: Sequence[str], k: int, held_out: bool) -> str:
    """Clip ``k``'s voice or language: in turn for the few held-out ones, by a stride through
    the many training ones (validation)."""
    return items[(k if held_out else k * STRIDE) % len(items)]


def espeak_clips(n: int, seed: int, held_out: bool = True) -> Iterator[tuple[str, Clip]]:
    from vivify.export.data.augment import resample
    from vivify.export.data.synth import Espeak
    from vivify.export.data.text import EVAL_SENTENCE_BASE, sentence

    es, rng = Espeak(), np.random.default_rng(seed)
    voices = corpus.EVAL_VOICES if held_out else corpus.TRAIN_VOICES
    for k in range(n):
        voice = _nth(voices, k, held_out)
        utt = es.say(sentence(corpus._language(voice), EVAL_SENTENCE_BASE + k), voice)
        segs = lab.segments(utt.phonemes)
        x = resample(utt.audio, utt.rate, RATE)
        yield f"espeak:{voice}", corpus._with_pauses([(x, segs)], rng)


def festival_clips(n: int, seed: int, held_out: bool = True) -> Iterator[tuple[str, Clip]]:
    from vivify.export.data.festival import VOICES, Festival, available_voices, sentence
    from vivify.export.data.text import EVAL_SENTENCE_BASE

    voices = ([v for v in corpus.FESTIVAL_EVAL_VOICES if v in available_voices()] if held_out
              else corpus.festival_train_voices())
    fest, rng = Festival(), np.random.default_rng(seed)
    for k in range(n if voices else 0):
        voice = voices[k % len(voices)]
        clip = fest.say(sentence(VOICES[voice].language, EVAL_SENTENCE_BASE + k), voice)
        yield f"festival:{voice}", corpus._with_pauses([(clip.audio, clip.segments)], rng)


def klettres_clips(n: int, seed: int, held_out: bool = True) -> Iterator[tuple[str, Clip]]:
    from vivify.export.data import klettres

    if not klettres.KLETTRES_DIR.is_dir():
        return
    rng = np.random.default_rng(seed)
    pool = klettres.recordings() if held_out else corpus.klettres_train_recordings()
    languages = (corpus.KLETTRES_EVAL_LANGUAGES if held_out
                 else tuple(sorted({r.language for r in pool})))
    for k in range(n):
        language = _nth(languages, k, held_out)
        recs = [r for r in pool if r.language == language]
        picked = [recs[int(i)] for i in rng.integers(0, len(recs), size=3)]
        parts = [(c.audio, c.segments) for c in map(klettres.label, picked)]
        yield f"klettres:{language}", corpus._with_pauses(parts, rng)


SOURCES = {"espeak": espeak_clips, "festival": festival_clips, "klettres": klettres_clips}


def evaluate(models: dict[str, str], clips_per_source: int, seed: int,
             sources: tuple[str, ...] = tuple(SOURCES), held_out: bool = True) -> dict:
    from vivify.engines.avatar.default_avatar import default_portrait_path
    from vivify.engines.avatar.face_landmarks import FaceAnalyzer
    from vivify.engines.avatar.pack import AvatarPreparer
    from vivify.engines.render.renderer import Renderer

    analyzer = FaceAnalyzer()
    renderer = Renderer(AvatarPreparer().prepare(default_portrait_path()))
    report: dict = {}
    for source in sources:
        make = SOURCES[source]
        clips = list(make(clips_per_source, seed, held_out))
        if not clips:
            report[source] = "not installed"
            continue
        table: dict = {}
        for channel, kbps in (("clean", None), ("opus16", 16)):
            for name, model in models.items():
                if model == "labels" and kbps:
                    continue  # the targets do not hear the channel
                rows = [ve.render_and_score(audio, segs, model, analyzer, renderer, kbps)
                        for _, (audio, segs) in clips]
                table[f"{name}/{channel}"] = ve.summarise(rows)
                print(f"{source:9s} {channel:6s} {name:9s} {table[f'{name}/{channel}']}",
                      flush=True)
        report[source] = {"voices": sorted({v for v, _ in clips}), "results": table}
    return report


def markdown(report: dict) -> str:
    keys = ("bilabial_closed", "vowel_opened", "open_p90", "silence_at_rest",
            "lag_frames_median", "bilabials", "open_vowels")
    out = []
    for source, body in report.items():
        if source == "split":
            continue
        if not isinstance(body, dict):
            out.append(f"### {source}: {body}\n")
            continue
        out.append(f"### {source} ({', '.join(body['voices'])})\n")
        out.append("| model / channel | " + " | ".join(keys) + " |")
        out.append("| --- |" + " --- |" * len(keys))
        for row, values in body["results"].items():
            out.append(f"| {row} | " + " | ".join(str(values.get(k, "")) for k in keys) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="a generator manifest to score (repeatable); 'baseline' is "
                             "always scored, and models/motion_generator.json as 'shipped'")
    parser.add_argument("--clips", type=int, default=16, help="clips per source")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-reference", action="store_true",
                        help="score only the --model ones (not shipped, baseline, labels)")
    parser.add_argument("--sources", default="", help="comma-separated subset of "
                        + ", ".join(SOURCES))
    parser.add_argument("--split", choices=("held-out", "validation"), default="held-out",
                        help="validation: training voices on unseen sentences (for tuning)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/holdout"))
    args = parser.parse_args(argv)
    from vivify.engines.motion.generator import DEFAULT_MANIFEST

    models = {} if args.no_reference else {"shipped": str(DEFAULT_MANIFEST)}
    models.update(dict(m.split("=", 1) for m in args.model))
    if not args.no_reference:
        models["baseline"] = "baseline"
        models["labels"] = "labels"  # the targets themselves: the ceiling of any model
    sources = tuple(args.sources.split(",")) if args.sources else tuple(SOURCES)
    t0 = time.perf_counter()
    report = evaluate(models, args.clips, args.seed, sources, args.split == "held-out")
    report["split"] = args.split
    report["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    (args.out / "report.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
