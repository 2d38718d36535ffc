"""``python -m vivify.export.train``: train the teacher (rectified-flow velocity field with CFG).

Rectified flow (Liu et al. 2022, "Flow straight and fast"): x_t = (1 − t)·x0 + t·ε, the model
regresses v = ε − x0 at t ~ logit-normal (Esser et al. 2024), and sampling integrates the ODE
from t = 1 to 0 (Euler, ``teacher_steps`` steps). Audio is dropped (→ learned null) with
probability ``cond_drop`` so the same network gives the unconditional branch for
classifier-free guidance. Weights are averaged (EMA) for sampling.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vivify.engines.motion.feature_norm import corpus_prior
from vivify.engines.motion.generator_config import TINY, GeneratorConfig
from vivify.engines.runtimes.torch_models.generator import MotionFlow
from vivify.export.dataset import SILENCE_CLASS, WindowSampler, noisy_past

EMA_DECAY = 0.998  # ~500-step average: runs here are a few thousand steps
WARMUP_STEPS = 200


def lr_at(step: int, total: int, peak: float, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 5 % of the peak. Progress is the larger of the
    step fraction and ``time_fraction`` (elapsed / time budget), so a run cut short by its
    time budget on a busy machine still ends with a decayed learning rate."""
    if step < WARMUP_STEPS:
        return peak * (step + 1) / WARMUP_STEPS
    u = max((step - WARMUP_STEPS) / max(1, total - WARMUP_STEPS), time_fraction)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, u))))


def budgeted_steps(opt: torch.optim.Optimizer, steps: int, peak_lr: float,
                   max_minutes: float) -> Iterator[int]:
    """Step indices until ``steps`` or the wall-clock budget runs out (0 = no budget), each
    with the optimiser's learning rate set by :func:`lr_at` for that step and time."""
    t0, budget = time.perf_counter(), 60.0 * max_minutes
    for step in range(steps):
        frac = (time.perf_counter() - t0) / budget if budget else 0.0
        if frac >= 1.0:
            return
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, peak_lr, frac)
        yield step


def flow_loss(model: MotionFlow, batch: dict[str, torch.Tensor], gen: torch.Generator
              ) -> torch.Tensor:
    cfg = model.cfg
    b = batch["target"].shape[0]
    target = model.normalise(batch["target"])  # (B, W, M)
    past_clean = model.normalise(batch["past"])  # (B, K, M)
    audio = encoded = model.encode(batch["mel"])
    mu = model.prior_mean(audio)  # (B, 1 + W, M) audio-only regression (zeros without a prior)
    if cfg.prior:  # frame s − 1 is the last cached label (rest before the clip)
        prev = past_clean[:, -1:] if cfg.cache else mu[:, :1].detach()
        prior_loss = torch.mean((mu - torch.cat([prev, target], dim=1)) ** 2)
    else:
        prior_loss = torch.zeros(())
    mu = mu.detach()  # the flow models the residual around a fixed μ
    x0 = target - mu[:, 1:]
    eps = torch.randn(x0.shape, generator=gen)
    t = torch.sigmoid(torch.randn(b, generator=gen))  # logit-normal
    xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
    past_n = noisy_past(past_clean, torch.ones(()),
                        model.past_noise_scale(), gen)
    audio_on = (torch.rand(b, generator=gen) >= cfg.cond_drop).float()
    keep = audio_on[:, None, None]
    audio = keep * audio + (1 - keep) * model.null_audio
    v = model.velocity(xt, t, past_n, audio, batch["controls"], mu)
    loss = torch.mean((v - (eps - x0)) ** 2) + cfg.prior_weight * prior_loss
    if cfg.closure_head:
        loss = loss + cfg.closure_head * frame_class_loss(model, encoded, batch["classes"])
    return loss


def frame_class_loss(model: MotionFlow, encoded: torch.Tensor, classes: torch.Tensor
                     ) -> torch.Tensor:
    """Cross-entropy of the auxiliary head's frame classes on the encoded audio (B, T, D)
    against the labels' classes (B, T): the real audio's encoding, never the null one."""
    logits = model.frame_logits(encoded)
    return F.cross_entropy(logits.flatten(0, 1), classes.flatten())


def save(path: Path, model: MotionFlow, extra: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": asdict(model.cfg), "state_dict": model.state_dict(), **extra}, path)


def load(path: Path) -> MotionFlow:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = MotionFlow(GeneratorConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def speech_prior(corpus: Path, exclude: tuple[str, ...] = ()) -> tuple[float, ...]:
    """The feature normalisation's prior: the per-band mean of the training clips' speech
    frames (those of ``exclude``d kinds left out, as the model never sees them)."""
    with np.load(corpus / "train.npz") as npz:
        feats, classes = npz["features"], npz["classes"]
        offsets, kinds = npz["offsets"], npz["kinds"]
    kept = np.repeat(~np.isin(kinds, list(exclude)), np.diff(offsets))
    return corpus_prior(feats, kept & (classes != SILENCE_CLASS))


def train(corpus: Path, out: Path, cfg: GeneratorConfig, steps: int, batch: int, lr: float,
          seed: int, log_every: int = 100, max_minutes: float = 0.0,
          init: Path | None = None, closure_boost: float = 0.0,
          exclude: tuple[str, ...] = ()) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    data = WindowSampler(corpus, cfg, closure_boost=closure_boost, exclude=exclude)
    if init is not None:  # continue a previous run (its config wins)
        model = load(init).train()
        cfg = model.cfg
        data = WindowSampler(corpus, cfg, closure_boost=closure_boost, exclude=exclude)
    else:
        model = MotionFlow(cfg)
        mean, std = data.stats()
        model.mean.copy_(torch.from_numpy(mean))
        model.std.copy_(torch.from_numpy(std))
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    history, t0, running = [], time.perf_counter(), 0.0
    done = 0
    for step in budgeted_steps(opt, steps, lr, max_minutes):
        done = step + 1
        loss = flow_loss(model, data.sample(batch, rng), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - EMA_DECAY if step > WARMUP_STEPS else 1.0)
        running += loss.item()
        if (step + 1) % log_every == 0:
            history.append({"step": step + 1, "loss": running / log_every,
                            "seconds": time.perf_counter() - t0})
            print(json.dumps(history[-1]), flush=True)
            running = 0.0
    info = {"steps": done, "planned_steps": steps, "max_minutes": max_minutes, "batch": batch,
            "lr": lr, "seed": seed, "init": str(init) if init else None,
            "closure_boost": closure_boost, "exclude": list(exclude),
            "seconds": time.perf_counter() - t0, "history": history}
    save(out, ema, {"train": info})
    return info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", type=Path, default=Path("artifacts/generator/corpus"))
    p.add_argument("--out", type=Path, default=Path("artifacts/generator/teacher.pt"))
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=14.0,
                   help="time budget; 0 = none (the schedule follows the larger fraction)")
    p.add_argument("--init", type=Path, default=None, help="continue from this checkpoint")
    p.add_argument("--tiny", action="store_true", help="CI: the tiny config")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--exclude", default="", metavar="KINDS",
                   help="comma-separated clip kinds left out (leave-one-source-out)")
    p.add_argument("--closure-boost", type=float, default=0.0,
                   help="share of windows drawn around a bilabial closure (0 = uniform)")
    p.add_argument("--lookahead", type=int, default=None,
                   help="L, frames of future audio (default: the config's)")
    p.add_argument("--window", type=int, default=None, help="W, frames per call")
    p.add_argument("--d-model", type=int, default=None, help="width (default: the config's)")
    p.add_argument("--layers", type=int, default=None, help="transformer blocks")
    p.add_argument("--mouth-cache", action="store_true",
                   help="let the model see the cache's mouth dims (before revision 5)")
    p.add_argument("--closure-head", type=float, default=0.0, metavar="WEIGHT",
                   help="weight of the auxiliary frame-class head (speech/silence/bilabial)")
    p.add_argument("--feature-norm", action="store_true",
                   help="causal per-stream feature normalisation (engines/motion/feature_norm)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TINY if args.tiny else GeneratorConfig()
    shape = {k: v for k, v in (("lookahead", args.lookahead), ("window", args.window),
                               ("d_model", args.d_model), ("n_layers", args.layers))
             if v is not None}
    cfg = dataclasses.replace(cfg, **shape, mouth_cache=args.mouth_cache,
                              closure_head=args.closure_head)
    exclude = tuple(k for k in args.exclude.split(",") if k)
    if args.feature_norm:
        cfg = dataclasses.replace(cfg, norm_prior=speech_prior(args.corpus, exclude))
    info = train(args.corpus, args.out, cfg, args.steps, args.batch, args.lr, args.seed,
                 max_minutes=args.max_minutes, init=args.init, closure_boost=args.closure_boost,
                 exclude=exclude)
    print(f"teacher saved to {args.out} after {info['seconds']:.0f} s")


if __name__ == "__main__":
    main()
