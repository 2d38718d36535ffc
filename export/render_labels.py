"""``python -m vivify.export.render_labels``: the training targets themselves, rendered and judged.

``--driver learned`` / ``baseline`` renders the same speech through that driver instead, so the
targets, the model and the baseline are scored on the same clips by the same judge.

A model can only be as good as what it is taught. Before any training, this renders the mouth
labels of a few sentences (``vivify.export.data.labels``: visemes → dominance blending → rig values)
straight through the renderer on the default avatar, and scores the video with the outside
judge (``../shared/judge``: face mesh on the frames + forced alignment of the transcript) the
way a user's clip is scored. If the labels themselves do not close on P/B/M or open on open
vowels, no model trained on them will.

Output (``--out``, default ``artifacts/label_check``): per sentence ``<k>.mp4``, ``<k>.wav``,
``<k>.txt`` and the judge's JSON, and ``report.json`` with the means. Voices: training voices
only (the labels' quality is a property of the targets, not of held-out audio). English text:
the judge's aligner knows English only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

from vivify.engines.audio.audio_io import SAMPLES_PER_FRAME
from vivify.engines.motion.vector import INDEX, MOTION_DIM, rest_motion
from vivify.export.data import labels as lab

REPO = Path(__file__).resolve().parent.parent
JUDGE = REPO.parent / "shared" / "judge"
SENTENCES = (  # rich in P/B/M and open vowels; the aligner fails on some: they are skipped
    "my mother made a warm apple pie for the party",
    "bob and pam are happy to be back home again",
    "hello there my name is peter and i bought a bottle of milk",
    "papa bought a bottle of milk and a bag of apples",
    "the cat sat on a mat and watched the big bird",
    "maybe we can meet at the market by the bay",
    "a big brown bear ate more plums than apples",
    "please pass me the map of the harbor park",
    "my father bought a lamp at the farm market",
    "tom and bob swam past the boat in the warm water",
)
VOICES = ("en-us", "en-gb-x-rp", "en-us+f2")
RATE = 16_000


def render_clip(text: str, voice: str, out: Path, driver: str = "labels") -> Path:
    """Speak ``text`` and render it, writing ``out``.mp4/.wav/.txt: ``labels`` renders the
    mouth targets (head still); ``learned`` / ``baseline`` run that driver on the audio, as
    ``vivify render`` does."""
    from vivify.engines.avatar.default_avatar import default_portrait_path
    from vivify.engines.avatar.pack import AvatarPreparer
    from vivify.engines.render.renderer import Renderer
    from vivify.export.data.augment import resample
    from vivify.export.data.synth import Espeak
    from vivify.streamer.offline.video_writer import Mp4Writer

    utt = Espeak().say(text, voice)
    speech = resample(utt.audio, utt.rate, RATE)
    lead = np.zeros(int(0.5 * RATE), np.float32)
    audio = np.concatenate([lead, speech, lead])
    write_wav(out.with_suffix(".wav"), audio)
    out.with_suffix(".txt").write_text(text + "\n")
    if driver != "labels":
        from vivify.streamer.offline.render import RenderOptions, render_file

        render_file(default_portrait_path(), out.with_suffix(".wav"), out.with_suffix(".mp4"),
                    RenderOptions(driver=driver))
        return out
    segs = lab.segments([(s + 0.5, e + 0.5, p) for s, e, p in utt.phonemes])
    n = audio.size // SAMPLES_PER_FRAME
    mouth = lab.mouth_labels(segs, n)
    motions = np.repeat(rest_motion()[None], n, axis=0)
    for k, name in enumerate(lab.MOUTH):
        motions[:, INDEX[name]] = mouth[:, k]
    assert motions.shape[1] == MOTION_DIM
    renderer = Renderer(AvatarPreparer().prepare(default_portrait_path()))
    out.parent.mkdir(parents=True, exist_ok=True)
    with Mp4Writer(out.with_suffix(".mp4"), width=512, height=512, fps=25,
                   audio_rate=RATE) as writer:
        for m in motions:
            writer.write_frame(renderer.render(m).image)
        writer.write_audio(audio[: n * SAMPLES_PER_FRAME])
    return out


def write_wav(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def judge(clip: Path, python: str) -> dict:
    """The outside judge's articulation scores of ``clip`` (.mp4 + .wav + .txt), with its
    lipsync lag and silence closure."""
    video, audio = str(clip.with_suffix(".mp4")), str(clip.with_suffix(".wav"))
    scores: dict = {}
    for args in (["articulation", video, audio, str(clip.with_suffix(".txt"))],
                 ["lipsync", video, audio]):
        done = subprocess.run([python, str(JUDGE / "judge.py"), *args], capture_output=True,
                              text=True, timeout=600, check=True)
        scores.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return scores


def judge_python() -> str:
    """The judge's own environment (its setup script prints its python; it installs once)."""
    done = subprocess.run(["bash", str(JUDGE / "setup.sh")], capture_output=True, text=True,
                          timeout=1800, check=True)
    return done.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "label_check")
    parser.add_argument("--clips", type=int, default=6, help="judged clips wanted")
    parser.add_argument("--driver", choices=("labels", "learned", "baseline"), default="labels",
                        help="the targets themselves, or a driver run on the audio")
    args = parser.parse_args(argv)
    python = judge_python()
    rows: list[dict] = []
    skipped: list[str] = []
    for k, text in enumerate(SENTENCES):
        if len(rows) == args.clips:
            break
        voice = VOICES[k % len(VOICES)]
        clip = render_clip(text, voice, args.out / f"{k}", args.driver)
        try:
            scores = judge(clip, python)
        except subprocess.CalledProcessError:  # pocketsphinx could not align this one
            skipped.append(text)
            continue
        scores.update(voice=voice, text=text)
        (args.out / f"{k}.json").write_text(json.dumps(scores, indent=2))
        rows.append(scores)
        print(f"{voice:12s} closed {scores['bilabial_closed']:.2f} opened "
              f"{scores['vowel_opened']:.2f} p90 {scores['open_p90']:.3f} silence "
              f"{scores.get('silence_closed')} lag {scores.get('lag_frames')}  {text}")
    keys = ("bilabial_closed", "vowel_opened", "open_p90", "silence_closed", "lag_frames")
    report: dict = {k: round(float(np.mean([r[k] for r in rows if r.get(k) is not None])), 3)
                    for k in keys}
    report["driver"] = args.driver
    report["clips"] = rows
    report["not_aligned"] = skipped
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
