"""The generator in torch: causal audio encoder + motion denoiser (a velocity field for
rectified flow), and the samplers. Reads top to bottom: leaves, blocks, model, samplers.

Shapes: B batch, K cache frames, W window frames, T = A + W + L audio context frames,
M = MOTION_DIM, C = CONTROL_DIM, D = d_model. Motion is normalised inside the model with the
corpus mean/std (buffers), so the graph's inputs and outputs are raw rig units.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vivify.engines.motion.generator_config import MOUTH_DIMS, GeneratorConfig

N_FRAME_CLASSES = 3  # export.data.labels.frame_classes: speech, silence, bilabial closure


class CausalConv(nn.Module):
    """Conv1d over time that only looks back (left padding), with a residual and GELU."""

    def __init__(self, d: int, kernel: int = 3) -> None:
        super().__init__()
        self.pad = kernel - 1
        self.conv = nn.Conv1d(d, d, kernel)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        h = self.conv(F.pad(self.norm(x).transpose(1, 2), (self.pad, 0)))  # (B, D, T)
        return x + F.gelu(h.transpose(1, 2))


class AudioEncoder(nn.Module):
    """log-mel (B, 4T, N_MELS) → per-video-frame features (B, T, D). Causal: output frame t
    depends on mel frames ≤ 4t + 3 only; the fixed lookahead comes from the context window."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Linear(cfg.mels_per_frame * cfg.n_mels, cfg.d_model)
        self.blocks = nn.ModuleList([CausalConv(cfg.d_model) for _ in range(2)])

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        b = mel.shape[0]
        x = mel.reshape(b, self.cfg.context_frames, -1)  # (B, T, 4·N_MELS)
        x = F.gelu(self.inp(x))  # (B, T, D)
        for blk in self.blocks:
            x = blk(x)
        return x


class Attention(nn.Module):
    """Plain multi-head self-attention written out (exports to any ONNX opset)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D)
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(
            2, 0, 3, 1, 4)  # 3 × (B, H, N, Dh)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block with FiLM conditioning (scale/shift from the step + controls)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False)
        self.att = Attention(d, cfg.n_heads)
        self.ff = nn.Sequential(nn.Linear(d, cfg.ff_mult * d), nn.GELU(),
                                nn.Linear(cfg.ff_mult * d, d))
        self.film = nn.Linear(d, 4 * d)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # (B, N, D), (B, D)
        s1, b1, s2, b2 = self.film(c).unsqueeze(1).chunk(4, dim=-1)  # 4 × (B, 1, D)
        x = x + self.att(self.norm1(x) * (1 + s1) + b1)
        return x + self.ff(self.norm2(x) * (1 + s2) + b2)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the flow time t ∈ [0, 1]: (B,) → (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / half)
    ang = 1000.0 * t[:, None] * freqs[None, :] / 10.0
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


class MotionFlow(nn.Module):
    """Velocity field v(x_t, t | past motion, audio, controls) for rectified flow.

    Tokens: [cond, K past frames, W noisy frames, T audio frames] with learned positions;
    the W noisy tokens are read out as the velocity. ``audio_on`` (B,) is 1 for conditional
    and 0 for the unconditional branch of classifier-free guidance (audio → learned null).
    """

    # Buffers made by register_buffer: nn.Module's __getattr__ is typed Tensor | Module, so
    # they are declared here to read as tensors in normalise/denormalise.
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, m = cfg.d_model, cfg.motion_dim
        self.encoder = AudioEncoder(cfg)
        self.null_audio = nn.Parameter(torch.zeros(cfg.context_frames, d))
        self.past_in = nn.Linear(m, d)
        self.x_in = nn.Linear(m, d)
        n_tokens = 1 + cfg.cache + cfg.window + cfg.context_frames
        self.pos = nn.Parameter(torch.randn(n_tokens, d) * 0.02)
        self.t_mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.ctrl = nn.Linear(cfg.control_dim, d)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, m)
        if cfg.prior:  # audio-only regression of frames s − 1 … s + W − 1, see prior_mean
            self.prior = nn.Sequential(nn.Linear(cfg.context_frames * d, 4 * d), nn.GELU(),
                                       nn.Linear(4 * d, (cfg.window + 1) * m))
            self.mu_in = nn.Linear(m, d)
            self.anchor_in = nn.Linear(m, d)
        if cfg.closure_head:  # auxiliary frame classes, see frame_logits
            self.frame_head = nn.Linear(d, N_FRAME_CLASSES)
        self.register_buffer("mean", torch.zeros(m))
        self.register_buffer("std", torch.ones(m))

    def normalise(self, motion: torch.Tensor) -> torch.Tensor:
        return (motion - self.mean) / self.std

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean

    def prior_mean(self, audio: torch.Tensor) -> torch.Tensor:
        """Encoded audio (B, T, D) → audio-only regression μ (B, 1 + W, M) of frame s − 1 (the
        last cached frame) and of the window's W frames, normalised units; zeros without a
        prior. The flow generates the residual x0 − μ[:, 1:]; μ[:, 0] against the cache's last
        frame tells it how far the shown motion is from the prior, so it can continue smoothly
        across the window boundary."""
        cfg = self.cfg
        if not cfg.prior:
            return audio.new_zeros(audio.shape[0], cfg.window + 1, cfg.motion_dim)
        return self.prior(audio.flatten(1)).reshape(-1, cfg.window + 1, cfg.motion_dim)

    def frame_logits(self, audio: torch.Tensor) -> torch.Tensor:
        """Encoded audio (B, T, D) → per-frame class logits (B, T, N_FRAME_CLASSES): is the
        frame speech, silence or a bilabial closure. A training signal for the encoder only
        (``closure_head`` > 0); sampling never calls it, so it is not in the ONNX graph."""
        return self.frame_head(audio)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, past_n: torch.Tensor,
                 audio: torch.Tensor, controls: torch.Tensor,
                 mu: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, W, M) normalised noisy residual window, t (B,), past_n (B, K, M) normalised,
        audio (B, T, D) encoded (or null), controls (B, C), mu (B, 1 + W, M) the prior's mean
        (normalised; ignored without a prior) → velocity (B, W, M)."""
        cfg = self.cfg
        past_n = self.visible_past(past_n)
        c = self.t_mlp(timestep_embedding(t, cfg.d_model)) + self.ctrl(controls)  # (B, D)
        xt = self.x_in(x)
        past = self.past_in(past_n)
        if cfg.prior and mu is not None:
            xt = xt + self.mu_in(mu[:, 1:])
            if cfg.cache:  # the last shown frame's offset from the prior (boundary anchor)
                anchor = self.anchor_in(past_n[:, -1] - mu[:, 0])[:, None]  # (B, 1, D)
                past = torch.cat([past[:, :-1], past[:, -1:] + anchor], dim=1)
        tokens = torch.cat([c[:, None, :], past, xt, audio],
                           dim=1) + self.pos  # (B, 1 + K + W + T, D)
        for blk in self.blocks:
            tokens = blk(tokens, c)
        start = 1 + cfg.cache
        return self.head(self.norm(tokens[:, start:start + cfg.window]))  # (B, W, M)

    def visible_past(self, past_n: torch.Tensor) -> torch.Tensor:
        """The cache as the model sees it: without ``mouth_cache`` its mouth dims are zeroed
        (the corpus mean in normalised units), so the mouth must come from the audio — a
        cache of labels would carry their anticipation of a closure, which the model's own
        frames at run time do not (a constant mask: it folds into the ONNX graph)."""
        if self.cfg.mouth_cache:
            return past_n
        keep = torch.ones(self.cfg.motion_dim)
        keep[list(MOUTH_DIMS)] = 0.0
        return past_n * keep

    def encode(self, mel: torch.Tensor, audio_on: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 4T, N_MELS) → (B, T, D); rows with audio_on == 0 get the learned null audio."""
        a = self.encoder(mel)
        if audio_on is None:
            return a
        keep = audio_on[:, None, None].to(a.dtype)
        return keep * a + (1 - keep) * self.null_audio

    def past_noise_scale(self) -> torch.Tensor:
        """(M,) max std of the training-time cache noise: ``past_noise`` on every dim,
        ``past_noise_mouth`` on the mouth (which must come from the audio, not the cache)."""
        s = torch.full((self.cfg.motion_dim,), self.cfg.past_noise)
        s[list(MOUTH_DIMS)] = self.cfg.past_noise_mouth
        return s


# --- samplers (rectified flow: x_t = (1 − t)·x0 + t·ε, v = ε − x0; Liu et al. 2022) ------------


def sample_euler(model: MotionFlow, noise: torch.Tensor, past: torch.Tensor, mel: torch.Tensor,
                 controls: torch.Tensor, steps: int, cfg_scale: float) -> torch.Tensor:
    """Euler ODE sampler from t = 1 (noise) to 0 with classifier-free guidance (Ho & Salimans
    2022) on the velocity. Raw-unit inputs/outputs; ``noise`` is explicit so sampling is a pure
    function. With ``cfg_scale`` 1 it evaluates the conditional branch only. With a prior the
    ODE runs on the residual around the prior's mean μ (both branches see μ; guidance acts on
    what the audio tokens add)."""
    b = noise.shape[0]
    past_n = model.normalise(past)
    a_c = model.encode(mel)
    a_u = model.null_audio.expand(b, -1, -1)
    mu = model.prior_mean(a_c)
    x = noise
    ts = torch.linspace(1.0, 0.0, steps + 1)
    for i in range(steps):
        t = ts[i].expand(b)
        v = model.velocity(x, t, past_n, a_c, controls, mu)
        if cfg_scale != 1.0:
            v_u = model.velocity(x, t, past_n, a_u, controls, mu)
            v = v_u + cfg_scale * (v - v_u)
        x = x + (ts[i + 1] - ts[i]) * v
    return model.denormalise(x + mu[:, 1:])


class Student(nn.Module):
    """The distilled sampler as one module: encoder once, ``student_steps`` Euler steps
    unrolled, conditional branch only (guidance is distilled in). This is what goes to ONNX."""

    def __init__(self, flow: MotionFlow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, mel: torch.Tensor, past: torch.Tensor, controls: torch.Tensor,
                noise: torch.Tensor) -> torch.Tensor:
        return sample_euler(self.flow, noise, past, mel, controls,
                            self.flow.cfg.student_steps, 1.0)
