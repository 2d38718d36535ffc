"""What an open mouth shows: teeth, gums, tongue, the wet inner lips and the dark cavity.

One function, :func:`interior`, written once for both renderers: the CPU renderer calls it with
numpy (:data:`NUMPY`, arrays (h, w), colours (3,), channels last) and the renderer graph with
torch (engines/runtimes/torch_models/renderer_graph.py, tensors (B, h, w), colours (B, 3, 1, 1),
channels first). It uses only arithmetic, ``clamp``, ``floor``, ``exp`` and ``sin`` —
elementwise ops every runtime has (TensorRT included) — so the two renderers compute
the same pixels.

The model, front to back, inside the target inner-lip opening (``y_up`` .. ``y_lo``):

- **Inner lips**: a wet, darker band along each lip's inner edge, growing with the opening,
  so an open mouth keeps the lips' thickness instead of thinning them to a line.
- **Teeth**: rows of individual teeth (central incisors widest, narrowing and foreshortened
  toward the corners, where they fall into shadow), rounded incisal corners, dark separations,
  a highlight down each crown. They are rigid: the upper row hangs from a line that moves with
  the skull (``y_ue``: the rest mouth line under the head pose only), the lower row stands on
  one that moves with the jaw (``y_le``), so they are never stretched with the lip skin.
- **Gums** above the upper crowns and below the lower ones, seen when a lip lifts far.
- **Tongue**: a rounded hump low in the mouth, visible once the mouth opens wide enough.
- **Cavity**: dark, darkest at the back and toward the corners.

Colours come from the portrait (``palette``: its lips, its own teeth when a smile shows them,
else ivory fitted to the skin's level and saturation); ``light`` tilts the brightness across
the mouth as the portrait's own lighting does; ``levels`` > 0 posterises the result for flat,
stylised portraits (paintings, cartoons), so their mouths stay in their style.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# Crown heights and the rigid edges' offsets from the rest mouth line, × eye distance.
UPPER_CROWN = 0.16
LOWER_CROWN = 0.09
UPPER_EDGE_DROP = 0.06  # the upper incisal edge sits this far below the rest lip line
LOWER_EDGE_DROP = 0.025  # the lower edge this far below it: the lower lip hides most of it
EDGE_ROUND = 0.012  # how far a tooth's corners are rounded up from its edge
# Tooth boundaries outward from the midline, × eye distance, as seen from the front (the arch
# foreshortens them): central incisor, lateral, canine, two premolars.
UPPER_BOUNDS = (0.0, 0.13, 0.215, 0.285, 0.335, 0.375)
LOWER_BOUNDS = (0.0, 0.085, 0.16, 0.225, 0.275, 0.315)
SEPARATION = 0.12  # the soft groove between teeth, × a tooth's width
EMBRASURE = 0.035  # the grooves darken over this height toward the edge, × eye distance
INNER_LIP = 0.035  # the inner lip band's width at full opening, × eye distance
TONGUE_MAX = 0.2  # the tongue hump's height at most, × eye distance


@dataclass(frozen=True)
class Ops:
    """The handful of elementwise functions :func:`interior` needs, per backend."""

    clamp: Callable[[Any, float | None, float | None], Any]
    abs: Callable[[Any], Any]
    floor: Callable[[Any], Any]
    exp: Callable[[Any], Any]
    sin: Callable[[Any], Any]
    channel: Callable[[Any], Any]  # a map → a map broadcastable against a colour
    brightness: Callable[[Any], Any]  # a colour layer → its mean over channels (kept as a dim)


def _np_clamp(x: Any, lo: float | None, hi: float | None) -> Any:
    return np.clip(x, lo, hi)


NUMPY = Ops(clamp=_np_clamp, abs=np.abs, floor=np.floor, exp=np.exp, sin=np.sin,
            channel=lambda a: a[..., None],
            brightness=lambda a: a.mean(axis=-1, keepdims=True))


def ramp_interp(ops: Ops, x: Any, knots: tuple[float, ...]) -> Any:
    """``np.interp(x, knots, 0..len-1)`` as a sum of clamped ramps (elementwise only)."""
    out = x * 0.0
    for a, b in itertools.pairwise(knots):
        out = out + ops.clamp((x - a) / (b - a), 0.0, 1.0)
    return out


def _teeth_row(ops: Ops, u: Any, knots: tuple[float, ...], e: Any
               ) -> tuple[Any, Any, Any, Any]:
    """Per column of one row: (edge lift, crown brightness, groove depth, how much of the
    row is there)."""
    phase = ramp_interp(ops, u, knots)  # 0..5 across the teeth, one unit per tooth
    s = phase - ops.floor(phase)  # position inside the tooth, 0..1
    there = ops.clamp((len(knots) - 1) - phase, 0.0, 1.0)  # 0 past the last tooth
    off_centre = ops.abs(s - 0.5) * 2.0  # 0 mid-tooth → 1 at a boundary
    lift = EDGE_ROUND * e * off_centre ** 6  # a flat edge with rounded corners
    to_boundary = 0.5 - ops.abs(s - 0.5)
    groove = ops.clamp(1.0 - to_boundary / SEPARATION, 0.0, 1.0)
    crown = 0.92 + 0.08 * ops.sin(s * math.pi)  # each crown a little convex: lit in its middle
    return lift, crown, groove * groove, there


def interior(ops: Ops, xs: Any, ys: Any, y_up: Any, y_lo: Any, y_ue: Any, y_le: Any,
             centre: Any, half: Any, e: Any, lip: Any, teeth: Any, cavity: Any, tongue: Any,
             gum: Any, light: Any, levels: Any) -> Any:
    """The interior's colour at every pixel of the mouth region (see the module docstring).

    Shapes broadcast: ``xs`` and the lines per column (…, 1, w), ``ys`` per row (…, h, 1),
    ``centre``, ``half``, ``e`` (eye distance), ``light`` and ``levels`` per mouth (…, 1, 1);
    colours broadcast against ``ops.channel(map)``.
    """
    ch = ops.channel
    dx = xs - centre
    across = ops.clamp(ops.abs(dx) / half, 0.0, 1.0)  # 0 mid-mouth → 1 corners
    u = ops.abs(dx) / e
    gap = ops.clamp(y_lo - y_up, 1.0, None)
    t = ops.clamp((ys - y_up) / gap, 0.0, 1.0)
    corner_shadow = 1.0 - 0.6 * across * across

    # Cavity: darkest halfway back, toward the corners too.
    mid = (t - 0.5) * 2.0
    layer = cavity * ch((0.55 + 0.45 * mid * mid) * (1.0 - 0.45 * across * across))
    # Tongue: a hump rising from the lower lip, only once the mouth is open enough.
    height = 0.34 * gap
    height = height - ops.clamp(height - TONGUE_MAX * e, 0.0, None)  # at most TONGUE_MAX
    top = y_lo - height * (1.0 - 0.85 * across * across)
    w_tongue = ops.clamp(ys - top, 0.0, 1.0) * ops.clamp(gap / (0.1 * e) - 0.5, 0.0, 1.0)
    # Its top recedes into the dark; its front, near the lower teeth, is lit.
    tongue_shade = (1.0 - 0.5 * across * across) * (0.45 + 0.55 * ops.clamp(
        (ys - top) / (0.09 * e + 1.0), 0.0, 1.0))
    layer = layer + (tongue * ch(tongue_shade) - layer) * ch(w_tongue)

    # Lower teeth on the jaw, their gums below.
    lift, crown, groove, there = _teeth_row(ops, u, LOWER_BOUNDS, e)
    edge = y_le + LOWER_EDGE_DROP * e + lift
    w_lower = (ops.clamp(ys - edge + 0.5, 0.0, 1.0)
               * ops.clamp(edge + LOWER_CROWN * e - ys + 0.5, 0.0, 1.0) * there)
    w_lgum = ops.clamp(ys - (edge + LOWER_CROWN * e) + 0.5, 0.0, 1.0) * there
    near_edge = ops.clamp(1.0 - (ys - edge) / (EMBRASURE * e), 0.0, 1.0)
    lower_shade = crown * (1.0 - groove * (0.12 + 0.3 * near_edge)) * corner_shadow * 0.78
    layer = layer + (gum * ch(corner_shadow * 0.8) - layer) * ch(w_lgum)
    layer = layer + (teeth * ch(lower_shade) - layer) * ch(w_lower)
    # Upper teeth on the skull, their gums above.
    lift, crown, groove, there = _teeth_row(ops, u, UPPER_BOUNDS, e)
    edge = y_ue + UPPER_EDGE_DROP * e - lift
    w_upper = (ops.clamp(edge - ys + 0.5, 0.0, 1.0)
               * ops.clamp(ys - (edge - UPPER_CROWN * e) + 0.5, 0.0, 1.0) * there)
    w_ugum = ops.clamp((edge - UPPER_CROWN * e) - ys + 0.5, 0.0, 1.0) * there
    near_edge = ops.clamp(1.0 - (edge - ys) / (EMBRASURE * e), 0.0, 1.0)
    under_lip = ops.clamp((ys - y_up) / (0.04 * e), 0.0, 1.0)  # the lip's shadow on the crowns
    upper_shade = (crown * (1.0 - groove * (0.1 + 0.3 * near_edge)) * corner_shadow
                   * (0.8 + 0.2 * under_lip))
    layer = layer + (gum * ch(corner_shadow) - layer) * ch(w_ugum)
    layer = layer + (teeth * ch(upper_shade) - layer) * ch(w_upper)

    # The wet inner lips, in front of everything.
    band = INNER_LIP * e * ops.clamp(gap / (0.12 * e), 0.0, 1.0) + 0.5
    w_lips = (ops.clamp(1.0 - (ys - y_up) / band, 0.0, 1.0)
              + ops.clamp(1.0 - (y_lo - ys) / band, 0.0, 1.0))
    layer = layer + (lip * 0.78 - layer) * ch(ops.clamp(w_lips, 0.0, 1.0))

    # The portrait's lighting across the mouth, then its style.
    layer = layer * ch(1.0 + light * ops.clamp(dx / half, -1.0, 1.0))
    # Posterised in brightness only (per channel, dark reds would turn green).
    per_value = ch(ops.clamp(levels, 1.0, None) / 255.0)  # levels per unit of brightness
    value = ops.clamp(ops.brightness(layer), 1.0, None)
    posterised = layer * ((ops.floor(value * per_value + 0.5) / per_value) / value)
    flat = ch(ops.clamp(levels, 0.0, 1.0))  # 0: a photo, no posterising
    return layer + (posterised - layer) * flat
