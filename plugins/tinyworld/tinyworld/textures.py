"""Textures of the world: two-tone patterns (masks) and the natural-looking scenes that serve as backgrounds.

Everything is computed on the 32x32 pixel grid with numpy, from a numpy Generator, so an image is a pure function
of its seed and thousands are drawn per second.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np

SIZE = 32
_Y, _X = (np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5) / SIZE  # pixel centres in [0, 1)


def _frame(angle: float, warp: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rotated (u, v) coordinates in pixels; ``warp`` bends them with a random sine, a texture seen off-flat."""
    a = np.radians(angle)
    u = (_X * np.cos(a) + _Y * np.sin(a)) * SIZE
    v = (-_X * np.sin(a) + _Y * np.cos(a)) * SIZE
    if warp:
        u = u + warp * np.sin(2 * np.pi * (v / rng.uniform(10, 24) + rng.random()))
        v = v + warp * np.sin(2 * np.pi * (u / rng.uniform(10, 24) + rng.random()))
    return u, v


def _stripes(u: np.ndarray, period: float, duty: float = 0.5) -> np.ndarray:
    return (np.mod(u / period, 1.0) < duty).astype(np.float32)


def _pattern(name: str, u: np.ndarray, v: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """The pattern's mask in {0, 1} on coordinates (u, v) with period ``p`` pixels."""
    if name == "striped":
        return _stripes(u, p)
    if name == "dotted":
        du, dv = np.mod(u / p, 1.0) - 0.5, np.mod(v / p, 1.0) - 0.5
        return ((du**2 + dv**2) < 0.09).astype(np.float32)
    if name == "checkered":
        return np.mod(np.floor(u / p) + np.floor(v / p), 2).astype(np.float32)
    if name == "grid":
        return np.maximum(_stripes(u, p, 0.3), _stripes(v, p, 0.3))
    if name == "zigzag":
        return _stripes(v + 0.6 * p * np.abs(np.mod(u / p, 2.0) - 1.0), p)
    if name == "wavy":
        return _stripes(v + 0.35 * p * np.sin(2 * np.pi * u / (1.6 * p)), p)
    if name == "speckled":
        return (rng.random((SIZE, SIZE)) < 0.3).astype(np.float32)
    if name == "concentric":
        return _stripes(np.hypot(u - rng.uniform(8, 24), v - rng.uniform(8, 24)), p)
    raise KeyError(name)


TEXTURES = ("striped", "dotted", "checkered", "grid", "zigzag", "wavy", "speckled", "concentric")
# The world draws patterns near these angles; a task may turn them anywhere.
_WORLD_ANGLES = (0.0, 45.0, 90.0, 135.0)


def texture(
    name: str, rng: np.random.Generator, period: float, free_angle: bool = False, warp: float = 0.0
) -> np.ndarray:
    """A 32x32 mask of ``name`` at a random phase, about ``period`` pixels per repeat."""
    angle = rng.uniform(0, 180) if free_angle else rng.choice(_WORLD_ANGLES) + rng.normal(0, 4)
    u, v = _frame(angle, warp, rng)
    u, v = u + rng.uniform(0, 64), v + rng.uniform(0, 64)
    return _pattern(name, u, v, period * rng.uniform(0.85, 1.2), rng)


@cache
def _upsampler(cells: int) -> np.ndarray:
    """(32, cells) linear interpolation weights from ``cells`` evenly spread values to 32 pixels."""
    position = np.clip((np.arange(SIZE) + 0.5) * cells / SIZE - 0.5, 0, cells - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, cells - 1)
    weights = np.zeros((SIZE, cells), np.float32)
    np.add.at(weights, (np.arange(SIZE), low), 1 - (position - low))
    np.add.at(weights, (np.arange(SIZE), high), position - low)
    return weights


def smooth_noise(rng: np.random.Generator, cells: tuple[int, int]) -> np.ndarray:
    """Value noise in [0, 1]: a (rows, cols) random grid upsampled bilinearly to 32x32."""
    return _upsampler(cells[0]) @ rng.random(cells, dtype=np.float32) @ _upsampler(cells[1]).T


def _mix(colour_a: tuple[float, float, float], colour_b: tuple[float, float, float], t: np.ndarray) -> np.ndarray:
    a, b = np.asarray(colour_a, np.float32) / 255, np.asarray(colour_b, np.float32) / 255
    return a + (b - a) * t[..., None]


def _grass(rng: np.random.Generator) -> np.ndarray:
    blades = smooth_noise(rng, (3, 24)) * 0.6 + smooth_noise(rng, (6, 6)) * 0.4
    return _mix((30, 90, 25), (110, 190, 70), blades)


def _water(rng: np.random.Generator) -> np.ndarray:
    p, q = rng.uniform(4, 7), rng.uniform(12, 30)
    waves = 0.5 + 0.5 * np.sin(2 * np.pi * (_Y * SIZE / p + 0.4 * np.sin(2 * np.pi * _X * SIZE / q)))
    return _mix((20, 60, 150), (90, 160, 220), 0.7 * waves**3 + 0.3 * smooth_noise(rng, (4, 4)))


def _sky(rng: np.random.Generator) -> np.ndarray:
    sky = _mix((70, 120, 215), (170, 205, 245), _Y)
    clouds = np.zeros((SIZE, SIZE), np.float32)
    for _ in range(rng.integers(1, 4)):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0.1, 0.8), rng.uniform(0.08, 0.18)
        clouds += np.exp(-(((_X - cx) / (2 * r)) ** 2 + ((_Y - cy) / r) ** 2))
    return sky + (1 - sky) * np.clip(clouds, 0, 1)[..., None]


def _sand(rng: np.random.Generator) -> np.ndarray:
    ripples = 0.5 + 0.5 * np.sin(2 * np.pi * (_X + 0.6 * _Y + 0.1 * smooth_noise(rng, (3, 3))) * rng.uniform(3, 6))
    grain = rng.random((SIZE, SIZE), dtype=np.float32)
    return _mix((200, 170, 110), (240, 220, 165), 0.5 * ripples + 0.5 * grain)


def _snow(rng: np.random.Generator) -> np.ndarray:
    return _mix((200, 210, 230), (250, 252, 255), 0.7 * smooth_noise(rng, (4, 4)) + 0.3 * rng.random((SIZE, SIZE)))


def _night(rng: np.random.Generator) -> np.ndarray:
    stars = (rng.random((SIZE, SIZE)) < 0.03) * rng.uniform(0.6, 1.0, (SIZE, SIZE))
    sky = _mix((5, 8, 25), (25, 35, 80), _Y[::-1] * 0.8 + 0.2 * smooth_noise(rng, (3, 3)))
    return np.maximum(sky, stars[..., None].astype(np.float32))


def _bricks(rng: np.random.Generator) -> np.ndarray:
    h, w = rng.integers(4, 7), rng.integers(8, 13)
    rows = np.floor(_Y * SIZE / h + rng.random())
    cols = np.floor(_X * SIZE / w + 0.5 * np.mod(rows, 2) + rng.random())
    shade = rng.random((64, 64), dtype=np.float32)[rows.astype(int) % 64, cols.astype(int) % 64]
    brick = _mix((120, 40, 25), (185, 85, 55), shade)
    mortar = (np.mod(_Y * SIZE, h) < 1) | (np.mod(_X * SIZE + 0.5 * w * np.mod(rows, 2), w) < 1)
    return np.where(mortar[..., None], np.float32(0.78), brick)


def _wood(rng: np.random.Generator) -> np.ndarray:
    grain = np.sin(2 * np.pi * (_Y * SIZE / rng.uniform(3, 6) + 1.5 * smooth_noise(rng, (3, 2))))
    return _mix((95, 55, 25), (175, 120, 70), 0.5 + 0.35 * grain + 0.15 * smooth_noise(rng, (2, 8)))


SCENES: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "grass": _grass,
    "water": _water,
    "sky": _sky,
    "sand": _sand,
    "snow": _snow,
    "night": _night,
    "bricks": _bricks,
    "wood": _wood,
}
# Mean colours, so a subject can be given a colour that stands out from its scene.
SCENE_COLOURS: dict[str, tuple[int, int, int]] = {
    "grass": (70, 140, 50),
    "water": (50, 100, 180),
    "sky": (130, 170, 230),
    "sand": (220, 195, 140),
    "snow": (230, 235, 245),
    "night": (15, 20, 50),
    "bricks": (150, 70, 45),
    "wood": (135, 88, 48),
}
