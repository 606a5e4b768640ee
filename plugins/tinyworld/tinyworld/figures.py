"""The world's figures as geometry: shapes, objects and the glyphs of digits and letters, in one small language.

A figure is a list of parts in a unit box (x right, y down, both in [-1, 1]). A part is a filled polygon, a
polygon that erases what was drawn before it (holes: a ring, a door), or a polyline stroked with the render's pen.
Being plain point arrays, every figure takes the same affine transform and hand-drawn jitter when it is rendered,
so one renderer serves the world and every downstream task. Parts are stored with extra points along long edges,
so that jitter bends an edge like a hand would instead of only moving its corners.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np

Points = list[tuple[float, float]]


_STEP = 0.25  # longest edge between stored points, unit box


@dataclass(frozen=True)
class Part:
    kind: Literal["fill", "erase", "stroke"]
    points: np.ndarray  # (n, 2)


def _dense(points: Points, closed: bool) -> np.ndarray:
    """``points`` with extra points on every edge longer than _STEP."""
    xy = np.asarray(points + points[:1] if closed else points, np.float64)
    out = [xy[:1]]
    for a, b in itertools.pairwise(xy):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / _STEP)))
        out.append(a + (b - a) * (np.arange(1, n + 1) / n)[:, None])
    dense = np.concatenate(out)
    return dense[:-1] if closed else dense


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, n: int = 0) -> Points:
    """Points of an elliptic arc from angle ``start`` to ``end`` in degrees (0 = right, 90 = down)."""
    n = n or max(4, int(abs(end - start) / 15) + 1)
    angles = np.radians(np.linspace(start, end, n))
    return [(cx + rx * float(np.cos(a)), cy + ry * float(np.sin(a))) for a in angles]


def regular(n: int, radius: float = 0.95, turn: float = -90.0, inner: float = 0.0) -> Points:
    """A regular polygon, or a star when ``inner`` (the inner radius) is set."""
    if not inner:
        return arc(0, 0, radius, radius, turn, turn + 360, n + 1)[:-1]
    angles = np.radians(turn + np.arange(2 * n) * 180.0 / n)
    radii = np.where(np.arange(2 * n) % 2 == 0, radius, inner)
    return list(zip((radii * np.cos(angles)).tolist(), (radii * np.sin(angles)).tolist(), strict=True))


def disc(cx: float, cy: float, rx: float, ry: float | None = None) -> Points:
    return arc(cx, cy, rx, rx if ry is None else ry, 0, 360, 25)[:-1]


def rect(x0: float, y0: float, x1: float, y1: float) -> Points:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def fill(*polygons: Points) -> list[Part]:
    return [Part("fill", _dense(p, closed=True)) for p in polygons]


def erase(*polygons: Points) -> list[Part]:
    return [Part("erase", _dense(p, closed=True)) for p in polygons]


def strokes(*lines: Points) -> list[Part]:
    return [Part("stroke", _dense(line, closed=False)) for line in lines]


def _heart() -> Points:
    t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    x, y = 16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [(float(a) / 17, float(b) / 17 + 0.1) for a, b in zip(x, y, strict=True)]


SHAPES: dict[str, list[Part]] = {
    "circle": fill(disc(0, 0, 0.95)),
    "square": fill(rect(-0.8, -0.8, 0.8, 0.8)),
    "triangle": fill([(0, -0.95), (0.95, 0.75), (-0.95, 0.75)]),
    "star": fill(regular(5, 1.0, inner=0.42)),
    "heart": fill(_heart()),
    "hexagon": fill(regular(6, turn=0)),
    "diamond": fill([(0, -1), (0.65, 0), (0, 1), (-0.65, 0)]),
    "cross": fill(rect(-0.9, -0.28, 0.9, 0.28), rect(-0.28, -0.9, 0.28, 0.9)),
    "ring": fill(disc(0, 0, 0.95)) + erase(disc(0, 0, 0.55)),
    "crescent": fill(disc(0, 0, 0.95)) + erase(disc(0.45, -0.15, 0.8)),
}

OBJECTS: dict[str, list[Part]] = {
    "house": fill(rect(-0.7, -0.1, 0.7, 0.9), [(-0.95, -0.05), (0, -0.9), (0.95, -0.05)])
    + erase(rect(-0.15, 0.4, 0.15, 0.9)),
    "tree": fill(rect(-0.15, 0.2, 0.15, 1.0), disc(0, -0.3, 0.65)),
    "car": fill(
        rect(-1, -0.1, 1, 0.45), [(-0.55, -0.1), (-0.35, -0.55), (0.35, -0.55), (0.55, -0.1)], disc(-0.55, 0.5, 0.25)
    )
    + fill(disc(0.55, 0.5, 0.25)),
    "boat": fill([(-1, 0.3), (1, 0.3), (0.65, 0.75), (-0.65, 0.75)], [(0.05, -0.9), (0.05, 0.2), (0.75, 0.2)])
    + strokes([(-0.05, 0.3), (-0.05, -0.9)]),
    "fish": fill(disc(-0.15, 0, 0.65, 0.4), [(0.35, 0), (0.95, -0.45), (0.95, 0.45)]) + erase(disc(-0.5, -0.1, 0.1)),
    "bird": fill(disc(0, 0.1, 0.55, 0.35), disc(-0.55, -0.25, 0.25), [(-0.75, -0.35), (-1, -0.2), (-0.75, -0.1)])
    + fill([(-0.1, 0.0), (0.35, -0.7), (0.45, 0.0)], [(0.45, 0.05), (1, -0.2), (1, 0.3)]),
    "sun": fill(disc(0, 0, 0.5))
    + strokes(
        *[
            [(0.68 * np.cos(a), 0.68 * np.sin(a)), (0.98 * np.cos(a), 0.98 * np.sin(a))]
            for a in np.arange(8) * np.pi / 4
        ]
    ),
    "cloud": fill(disc(-0.5, 0.15, 0.38), disc(0, -0.12, 0.5), disc(0.5, 0.15, 0.38), rect(-0.5, 0.1, 0.5, 0.53)),
    "flower": strokes([(0, -0.2), (0, 1)])
    + fill(*[disc(0.36 * np.cos(a), -0.35 + 0.36 * np.sin(a), 0.26) for a in np.arange(5) * 2 * np.pi / 5])
    + erase(disc(0, -0.35, 0.14)),
    "key": fill(disc(-0.55, 0, 0.42), rect(-0.2, -0.1, 1, 0.1), rect(0.55, 0.1, 0.7, 0.4), rect(0.82, 0.1, 0.97, 0.33))
    + erase(disc(-0.55, 0, 0.2)),
    "cup": fill(disc(0.5, 0, 0.38))
    + erase(disc(0.5, 0, 0.2))
    + fill([(-0.7, -0.6), (0.5, -0.6), (0.4, 0.75), (-0.6, 0.75)]),
    "bell": fill([*arc(0, -0.25, 0.5, 0.6, 180, 360), (0.5, 0.3), (0.85, 0.65), (-0.85, 0.65), (-0.5, 0.3)])
    + fill(disc(0, 0.8, 0.17), disc(0, -0.88, 0.12)),
    "mushroom": fill(arc(0, 0.1, 1.0, 0.85, 180, 360), rect(-0.25, 0.05, 0.25, 0.95)),
    "candle": fill(rect(-0.25, -0.3, 0.25, 1.0), [*arc(0, -0.65, 0.18, 0.25, -30, 210), (0, -1.05)]),
    "kite": fill([(0, -1), (0.6, -0.3), (0, 0.5), (-0.6, -0.3)])
    + strokes([(0, 0.5), (0.2, 0.7), (-0.1, 0.85), (0.15, 1)]),
    "bottle": fill(rect(-0.4, -0.2, 0.4, 1), [(-0.4, -0.2), (-0.15, -0.55), (0.15, -0.55), (0.4, -0.2)])
    + fill(rect(-0.15, -0.95, 0.15, -0.5)),
    "hat": fill(rect(-1, 0.35, 1, 0.55), rect(-0.55, -0.6, 0.55, 0.4)),
    "chair": fill(rect(-0.55, -1, -0.32, 0.15), rect(-0.55, 0.1, 0.6, 0.32), rect(-0.55, 0.3, -0.35, 1))
    + fill(rect(0.4, 0.3, 0.6, 1)),
    "ladder": strokes(
        [(-0.45, -1), (-0.45, 1)], [(0.45, -1), (0.45, 1)], *[[(-0.45, y), (0.45, y)] for y in (-0.6, -0.2, 0.2, 0.6)]
    ),
}

# Glyphs are strokes only, so a handwritten look is a thicker pen and more jitter, not another table.
DIGITS: dict[str, list[Part]] = {
    "0": strokes(arc(0, 0, 0.55, 0.95, 0, 360)),
    "1": strokes([(-0.3, -0.6), (0.05, -0.95), (0.05, 0.95)]),
    "2": strokes([*arc(0, -0.45, 0.5, 0.5, 200, 400), (-0.55, 0.95), (0.55, 0.95)]),
    "3": strokes(arc(0, -0.48, 0.45, 0.47, 200, 450) + arc(0, 0.47, 0.5, 0.48, 270, 520)),
    "4": strokes([(0.25, 0.95), (0.25, -0.95), (-0.55, 0.35), (0.6, 0.35)]),
    "5": strokes([(0.5, -0.95), (-0.4, -0.95), (-0.45, -0.1), *arc(0, 0.4, 0.5, 0.55, 235, 520)]),
    "6": strokes([(0.35, -0.95), (-0.42, 0.3)], arc(0, 0.45, 0.47, 0.5, 0, 360)),
    "7": strokes([(-0.55, -0.95), (0.55, -0.95), (-0.1, 0.95)]),
    "8": strokes(arc(0, -0.5, 0.4, 0.45, 0, 360), arc(0, 0.45, 0.5, 0.5, 0, 360)),
    "9": strokes(arc(0, -0.45, 0.47, 0.5, 0, 360), [(0.47, -0.4), (0.2, 0.95)]),
}

_P_BOWL = [(-0.5, 0.95), (-0.5, -0.95), (0.1, -0.95), *arc(0.1, -0.47, 0.45, 0.48, 270, 450), (-0.5, 0.01)]
_O_RING = arc(0, 0, 0.6, 0.95, 0, 360)
LETTERS: dict[str, list[Part]] = {
    "a": strokes([(-0.6, 0.95), (0, -0.95), (0.6, 0.95)], [(-0.35, 0.25), (0.35, 0.25)]),
    "b": strokes(
        [(-0.5, 0.95), (-0.5, -0.95), (0.1, -0.95), *arc(0.1, -0.5, 0.4, 0.45, 270, 450), (-0.5, -0.05)],
        [(-0.5, -0.05), (0.15, -0.05), *arc(0.15, 0.45, 0.45, 0.5, 270, 450), (-0.5, 0.95)],
    ),
    "c": strokes(arc(0.05, 0, 0.6, 0.95, 320, 40)),
    "d": strokes([(-0.5, -0.95), (-0.5, 0.95), (0, 0.95), *arc(0, 0, 0.55, 0.95, 90, -90), (-0.5, -0.95)]),
    "e": strokes([(0.5, -0.95), (-0.5, -0.95), (-0.5, 0.95), (0.5, 0.95)], [(-0.5, 0), (0.3, 0)]),
    "f": strokes([(0.5, -0.95), (-0.5, -0.95), (-0.5, 0.95)], [(-0.5, 0), (0.3, 0)]),
    "g": strokes([*arc(0.05, 0, 0.6, 0.95, 320, 30), (0.55, 0.05), (0.05, 0.05)]),
    "h": strokes([(-0.5, -0.95), (-0.5, 0.95)], [(0.5, -0.95), (0.5, 0.95)], [(-0.5, 0), (0.5, 0)]),
    "i": strokes([(0, -0.95), (0, 0.95)], [(-0.3, -0.95), (0.3, -0.95)], [(-0.3, 0.95), (0.3, 0.95)]),
    "j": strokes([(0.35, -0.95), (0.35, 0.45), *arc(-0.05, 0.45, 0.4, 0.5, 0, 180)]),
    "k": strokes([(-0.5, -0.95), (-0.5, 0.95)], [(0.5, -0.95), (-0.5, 0.1)], [(-0.25, -0.15), (0.55, 0.95)]),
    "l": strokes([(-0.5, -0.95), (-0.5, 0.95), (0.5, 0.95)]),
    "m": strokes([(-0.6, 0.95), (-0.6, -0.95), (0, 0.3), (0.6, -0.95), (0.6, 0.95)]),
    "n": strokes([(-0.5, 0.95), (-0.5, -0.95), (0.5, 0.95), (0.5, -0.95)]),
    "o": strokes(_O_RING),
    "p": strokes(_P_BOWL),
    "q": strokes(_O_RING, [(0.1, 0.45), (0.65, 1.0)]),
    "r": strokes(_P_BOWL, [(-0.05, 0.0), (0.55, 0.95)]),
    "s": strokes(arc(0, -0.48, 0.48, 0.47, 340, 90) + arc(0, 0.47, 0.5, 0.48, 270, 520)),
    "t": strokes([(-0.6, -0.95), (0.6, -0.95)], [(0, -0.95), (0, 0.95)]),
    "u": strokes([(-0.5, -0.95), (-0.5, 0.4), *arc(0, 0.4, 0.5, 0.55, 180, 0), (0.5, -0.95)]),
    "v": strokes([(-0.6, -0.95), (0, 0.95), (0.6, -0.95)]),
    "w": strokes([(-0.65, -0.95), (-0.35, 0.95), (0, -0.3), (0.35, 0.95), (0.65, -0.95)]),
    "x": strokes([(-0.55, -0.95), (0.55, 0.95)], [(0.55, -0.95), (-0.55, 0.95)]),
    "y": strokes([(-0.55, -0.95), (0, 0), (0.55, -0.95)], [(0, 0), (0, 0.95)]),
    "z": strokes([(-0.5, -0.95), (0.5, -0.95), (-0.5, 0.95), (0.5, 0.95)]),
}
