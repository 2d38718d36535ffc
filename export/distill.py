"""``python -m vivify.export.distill``: distil the guided teacher into a 2-step student.

Method: rectified-flow teacher → *reflow-style direct distillation of the unrolled sampler*
(Liu et al. 2022 "reflow" / Luhman & Luhman 2021 "knowledge distillation in iterative
generative models"). We draw (noise ε, context) pairs, run the teacher's deterministic ODE
sampler (``teacher_steps`` Euler steps with classifier-free guidance, i.e. 2 × 32 = 64 network
evaluations) to get x0 = Φ_teacher(ε | context), and train the student — initialised from the
teacher — so that its own ``student_steps``-step Euler sampler, unrolled and differentiated end
to end, maps the same ε to the same x0 (MSE in normalised units).

Why this one: the teacher's sampler is a deterministic function of the noise, so matching it
is plain regression on a few-dimensional output (W × 19 numbers); the flow's paths are already
nearly straight, so 2 Euler steps from a teacher-initialised network get close before any
training; and unlike progressive distillation it needs one round, unlike consistency
distillation no schedule of target networks — it fits a 2-core CPU budget. Guidance is
distilled in: the student evaluates one branch per step (half the cost again).

Several teachers (``--teacher`` repeated: the same recipe from different seeds) make an
*ensemble* target: each pair's x0 is the mean of the teachers' samples from the same noise and
context. Every teacher approximates the same flow, so the mean keeps what they agree on and
averages out what one seed learned by chance (its quirks on voices unlike the training ones);
the student still costs one network, initialised from the first teacher.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vivify.engines.runtimes.torch_models.generator import MotionFlow, Student, sample_euler
from vivify.export.dataset import WindowSampler, noisy_past
from vivify.export.train import budgeted_steps, load, save

PAIR_BATCH = 512


@torch.no_grad()
def make_pairs(teachers: list[MotionFlow], data: WindowSampler, n: int, seed: int
               ) -> dict[str, torch.Tensor]:
    """``n`` (context, noise, teacher sample) triples; the cache is noise-augmented as in
    training so the student also learns to follow slightly wrong caches. With several
    teachers the sample is their mean from the same noise (the first one's config and
    normalisation frame the pairs; :func:`check_ensemble` makes sure they all agree)."""
    teacher = teachers[0]
    cfg = teacher.cfg
    rng = np.random.default_rng([seed, 1])
    gen = torch.Generator().manual_seed(seed + 1)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("mel", "past", "controls", "noise",
                                                            "x0")}
    done = 0
    while done < n:
        b = min(PAIR_BATCH, n - done)
        batch = data.sample(b, rng)
        past = teacher.denormalise(noisy_past(teacher.normalise(batch["past"]), torch.ones(()),
                                              teacher.past_noise_scale(), gen))
        noise = torch.randn((b, cfg.window, cfg.motion_dim), generator=gen)
        x0 = torch.stack([sample_euler(t, noise, past, batch["mel"], batch["controls"],
                                       cfg.teacher_steps, cfg.cfg_scale)
                          for t in teachers]).mean(dim=0)
        for k, v in (("mel", batch["mel"]), ("past", past), ("controls", batch["controls"]),
                     ("noise", noise), ("x0", x0)):
            parts[k].append(v)
        done += b
    return {k: torch.cat(v) for k, v in parts.items()}


def check_ensemble(teachers: list[MotionFlow]) -> None:
    """Teachers averaged into one target must share the config and the motion normalisation
    (same recipe, same corpus, other seeds); anything else would average different things."""
    first = teachers[0]
    for other in teachers[1:]:
        if other.cfg != first.cfg:
            raise ValueError("ensemble teachers differ in config; train them with one recipe")
        if not (torch.equal(other.mean, first.mean) and torch.equal(other.std, first.std)):
            raise ValueError("ensemble teachers differ in motion normalisation; "
                             "train them on one corpus with the same --exclude")


def distill(teacher_paths: Sequence[Path], corpus: Path, out: Path, n_pairs: int,
            steps: int, batch: int, lr: float, seed: int, max_minutes: float = 0.0,
            closure_boost: float = 0.0, exclude: tuple[str, ...] = ()) -> dict:
    torch.manual_seed(seed)
    paths = list(teacher_paths)
    teachers = [load(p) for p in paths]
    check_ensemble(teachers)
    teacher = teachers[0]
    cfg = teacher.cfg
    data = WindowSampler(corpus, cfg, closure_boost=closure_boost,
                         exclude=exclude)  # as the teacher saw
    t0 = time.perf_counter()
    pairs = make_pairs(teachers, data, n_pairs, seed)
    pair_seconds = time.perf_counter() - t0
    print(json.dumps({"pairs": n_pairs, "seconds": pair_seconds}), flush=True)
    student = Student(copy.deepcopy(teacher)).train()
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed + 2)
    std = teacher.std
    history, running, done = [], 0.0, 0
    for step in budgeted_steps(opt, steps, lr, max_minutes):
        done = step + 1
        idx = torch.randint(0, n_pairs, (batch,), generator=gen)
        pred = student(pairs["mel"][idx], pairs["past"][idx], pairs["controls"][idx],
                       pairs["noise"][idx])
        loss = torch.mean(((pred - pairs["x0"][idx]) / std) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        running += loss.item()
        if (step + 1) % 100 == 0:
            history.append({"step": step + 1, "loss": running / 100,
                            "seconds": time.perf_counter() - t0})
            print(json.dumps(history[-1]), flush=True)
            running = 0.0
    info = {"method": "reflow-style direct distillation of the unrolled 2-step Euler sampler",
            "teachers": [str(p) for p in paths], "pairs": n_pairs,
            "pair_seconds": pair_seconds, "steps": done, "planned_steps": steps,
            "max_minutes": max_minutes, "batch": batch,
            "lr": lr, "seed": seed, "seconds": time.perf_counter() - t0, "history": history}
    save(out, student.flow.eval(), {"distill": info})
    return info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", type=Path, action="append", default=None,
                   help="teacher checkpoint; repeat for an ensemble target (default: "
                        "artifacts/generator/teacher.pt)")
    p.add_argument("--corpus", type=Path, default=Path("artifacts/generator/corpus"))
    p.add_argument("--out", type=Path, default=Path("artifacts/generator/student.pt"))
    p.add_argument("--pairs", type=int, default=32768)
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--exclude", default="", metavar="KINDS",
                   help="comma-separated clip kinds left out (leave-one-source-out)")
    p.add_argument("--closure-boost", type=float, default=0.0,
                   help="share of windows drawn around a bilabial closure (as in training)")
    p.add_argument("--max-minutes", type=float, default=10.0,
                   help="time budget of the student's training (pairs not counted); 0 = none")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    teachers = args.teacher or [Path("artifacts/generator/teacher.pt")]
    info = distill(teachers, args.corpus, args.out, args.pairs, args.steps, args.batch,
                   args.lr, args.seed, args.max_minutes, args.closure_boost,
                   tuple(k for k in args.exclude.split(",") if k))
    print(f"student saved to {args.out} after {info['seconds']:.0f} s")


if __name__ == "__main__":
    main()
