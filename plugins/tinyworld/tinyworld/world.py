"""The procedural image-caption world: GIFT's pre-training data in miniature.

An image is a 32x32 RGB picture of one thing (a shape, an object, a digit or a letter glyph, with a colour, a fill
pattern, a size, a position or a count, over a natural scene or a plain background), or of a full-frame pattern, or
of a bare scene. What it shows is a set of *facts* ({"shape": "circle", "colour": "red", ...}); a caption names a
random subset of them, mostly one at a time ("a circle.", "a photo of a red thing."), because zero-shot prompts name
one attribute at a time. A caption is true of every image whose facts include the caption's facts, which is what
the contrastive loss uses as positives. Everything is a pure function of (seed, stream, index).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from tinyworld.figures import DIGITS, LETTERS, OBJECTS, SHAPES, Part
from tinyworld.textures import SCENE_COLOURS, SCENES, SIZE, TEXTURES, smooth_noise, texture

Facts = Mapping[str, str]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 30),
    "orange": (245, 135, 20),
    "yellow": (240, 220, 40),
    "green": (40, 165, 50),
    "cyan": (40, 205, 215),
    "blue": (30, 70, 215),
    "purple": (135, 50, 185),
    "pink": (245, 140, 195),
    "brown": (125, 75, 35),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
}
FIGURES: dict[str, dict[str, list[Part]]] = {"shape": SHAPES, "object": OBJECTS, "digit": DIGITS, "letter": LETTERS}
PATTERNS = ("solid", "outlined", *TEXTURES)
SIZES = {"small": (12.0, 14.0), "medium": (16.0, 20.0), "large": (22.0, 28.0)}  # figure height, pixels
POSITIONS = {"left": (0.3, 0.5), "right": (0.7, 0.5), "top": (0.5, 0.3), "bottom": (0.5, 0.7), "middle": (0.5, 0.5)}
COUNTS = ("one", "two", "three", "four")

# A concept is one value of one family: the vocabulary of the world (the analogue of ImageNet's class names).
FAMILIES: dict[str, tuple[str, ...]] = {
    **{family: tuple(figures) for family, figures in FIGURES.items()},
    "colour": tuple(COLOURS),
    "pattern": PATTERNS,
    "background": tuple(SCENES),
    "size": ("small", "large"),  # medium is drawn but never named
    "position": tuple(POSITIONS),
    "count": COUNTS,
}
PREFIXES = ("", "a picture of ", "an image of ", "a photo of ", "a drawing of ")
CONCEPT_TEMPLATES = tuple(prefix + "{}." for prefix in PREFIXES)

_POSITION_WORDS = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
_POSITION_WORDS["middle"] = "in the middle"
_SCENE_WORDS = {"sky": "in the sky", "night": "at night"}
# Kinds of image: a thing of one figure family, a full-frame pattern, or a bare scene.
_KINDS = {"shape": 0.24, "object": 0.24, "digit": 0.2, "letter": 0.22, "pattern": 0.05, "background": 0.05}
_IDENTITY_WEIGHT = 4.0  # captions name what the thing is four times as often as any one of its attributes
_FACTS_PER_CAPTION = (0.5, 0.25, 0.1, 0.15)  # one, two, three facts, or all of them


@dataclass(frozen=True)
class Style:
    """How a domain draws: the world's look by default; a downstream task shifts it (sketches, clutter, zoom)."""

    rotation: float = 8.0  # max |angle| of a figure, degrees
    shear: float = 0.15  # max |shear| of a figure
    jitter: float = 0.015  # hand-drawn jitter of each point, unit box (a figure spans [-1, 1])
    pen: tuple[float, float] = (0.1, 0.5)  # stroke width range, unit box
    period: tuple[float, float] = (3.5, 7.0)  # repeat of a full-frame pattern, pixels
    free_angle: bool = False  # patterns at any angle, not near 0/45/90/135 degrees
    warp: float = 0.0  # bend patterns by this many pixels
    clutter: int = 0  # up to this many small stray shapes behind the subject
    zoom: float = 1.0  # zoom into the frame by up to this factor
    lowres: float = 0.12  # probability of a low-resolution look (10-16 px, upscaled)
    tint: float = 0.0  # per-channel colour cast, up to this fraction
    grey: float = 0.0  # probability of a black-and-white picture
    noise: float = 0.03  # max σ of pixel noise
    glyph_sizes: tuple[float, float, float] = (0.05, 0.3, 0.65)  # small, medium, large for digits and letters
    colours: tuple[str, ...] = tuple(COLOURS)


WORLD_STYLE = Style()


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x", "sh", "ch")) else "s")


def noun(family: str, value: str) -> str:
    """What a thing of a figure family is called: "circle", "digit 7", "letter k"."""
    return f"{family} {value}" if family in ("digit", "letter") else value


def _background_words(value: str) -> str:
    if value in SCENES:
        return _SCENE_WORDS.get(value, f"on {value}")
    return f"on {_article(value)} {value} background"


def phrase(facts: Facts, kind: str) -> str:
    """The noun phrase naming exactly ``facts`` of an image of ``kind``: "two small red striped circles on grass"."""
    if kind == "background":
        return facts["background"]
    identity = next((family for family in FIGURES if family in facts), None)
    if identity:
        head = noun(identity, facts[identity])
    else:
        head = "pattern" if kind == "pattern" and "pattern" in facts else "thing"
    count = facts.get("count")
    if count not in (None, "one"):
        head = _plural(head)
    words = [facts[key] for key in ("size", "colour", "pattern") if key in facts] + [head]
    words.insert(0, count or _article(words[0]))
    if "position" in facts:
        words.append(_POSITION_WORDS[facts["position"]])
    if "background" in facts:
        words.append(_background_words(facts["background"]))
    return " ".join(words)


@dataclass(frozen=True)
class Concept:
    family: str
    value: str

    @property
    def name(self) -> str:
        """The concept as a noun phrase ("a circle", "a red thing", "grass"), to fill CONCEPT_TEMPLATES."""
        kind = self.family if self.family in (*FIGURES, "pattern", "background") else "thing"
        return phrase({self.family: self.value}, kind)


CONCEPTS = tuple(Concept(family, value) for family, values in FAMILIES.items() for value in values)
CONCEPT_NAMES = tuple(concept.name for concept in CONCEPTS)


def caption(facts: Facts, kind: str, rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """A caption naming a random subset of ``facts``, mostly a single fact, and that subset."""
    keys = list(facts)
    draw = int(np.searchsorted(np.cumsum(_FACTS_PER_CAPTION), rng.random(), side="right"))
    n = len(keys) if draw == len(_FACTS_PER_CAPTION) - 1 else min(len(keys), draw + 1)
    # Weighted sampling without replacement: the n largest of u ** (1 / weight).
    weights = np.array([_IDENTITY_WEIGHT if key in FIGURES else 1.0 for key in keys])
    chosen = set(np.argsort(-(rng.random(len(keys)) ** (1 / weights)))[:n].tolist())
    named = {key: facts[key] for i, key in enumerate(keys) if i in chosen}
    return _pick(rng, PREFIXES) + phrase(named, kind) + ".", named


# ---------------------------------------------------------------------------------------------------------------
# What an image shows


def _pick(rng: np.random.Generator, items: Sequence[str], odds: Sequence[float] | None = None) -> str:
    """One of ``items``, uniformly or with ``odds`` (summing to 1): Generator.choice, several times faster."""
    if odds is None:
        return items[int(rng.integers(len(items)))]
    return items[min(int(np.searchsorted(np.cumsum(odds), rng.random(), side="right")), len(items) - 1)]


@cache
def _far_colours(background: tuple[int, int, int], names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n in names if np.linalg.norm(np.subtract(COLOURS[n], background)) > 110)


def _contrasting(rng: np.random.Generator, background: tuple[int, int, int], names: tuple[str, ...]) -> str:
    """A colour that stands out from ``background``, so that what a caption names can be seen."""
    return _pick(rng, _far_colours(background, names))


def _background_colour(value: str) -> tuple[int, int, int]:
    return SCENE_COLOURS[value] if value in SCENES else COLOURS[value]


def sample_facts(rng: np.random.Generator, style: Style = WORLD_STYLE) -> tuple[dict[str, str], str]:
    """What one world image shows, and its kind: a figure family, "pattern" or "background"."""
    kind = _pick(rng, tuple(_KINDS), tuple(_KINDS.values()))
    if kind == "background":
        return {"background": _pick(rng, FAMILIES["background"])}, kind
    if kind == "pattern":
        return {"pattern": _pick(rng, TEXTURES), "colour": _pick(rng, style.colours)}, kind
    background = _pick(rng, FAMILIES["background"]) if rng.random() < 0.2 else _pick(rng, style.colours)
    facts = {kind: _pick(rng, FAMILIES[kind]), "background": background}
    facts["colour"] = _contrasting(rng, _background_colour(background), style.colours)
    if kind in ("shape", "object"):
        facts["pattern"] = _pick(rng, PATTERNS, [0.55, 0.2] + [0.25 / len(TEXTURES)] * len(TEXTURES))
        facts["count"] = _pick(rng, COUNTS, [0.85, 0.05, 0.05, 0.05])
        size_odds = (0.2, 0.35, 0.45)
    else:
        size_odds = style.glyph_sizes
    if facts.get("count", "one") == "one":
        size = _pick(rng, tuple(SIZES), size_odds)
        if size != "medium":
            facts["size"] = size
        facts["position"] = "middle" if size == "large" else _pick(rng, tuple(POSITIONS))
    return facts, kind


# ---------------------------------------------------------------------------------------------------------------
# Drawing

_SUPERSAMPLE = 2


def _rgb(name: str, rng: np.random.Generator) -> np.ndarray:
    """A named colour with a little natural variation, in [0, 1]."""
    base = np.asarray(COLOURS[name], np.float32) / 255
    return np.clip(base + rng.normal(0, 0.04, 3), 0, 1).astype(np.float32)


def _background(value: str, rng: np.random.Generator) -> np.ndarray:
    if value in SCENES:
        return SCENES[value](rng).astype(np.float32)
    shade = 0.9 + 0.2 * smooth_noise(rng, (2, 2))[..., None]
    return np.clip(_rgb(value, rng) * shade, 0, 1)


def _figure_canvas(
    parts: Sequence[Part], centre: tuple[float, float], size: float, rng: np.random.Generator, style: Style
) -> Image.Image:
    """The figure's coverage drawn at twice the resolution: ``size`` pixels tall, turned, sheared and jittered."""
    angle = np.radians(rng.uniform(-style.rotation, style.rotation))
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shear = np.array([[1.0, rng.uniform(-style.shear, style.shear)], [0.0, 1.0]])
    scale = size / 2 * _SUPERSAMPLE
    matrix = scale * (rotate @ shear)
    offset = np.asarray(centre) * SIZE * _SUPERSAMPLE
    pen = rng.uniform(*style.pen)
    width = max(1, round(pen * scale))
    canvas = Image.new("L", (SIZE * _SUPERSAMPLE,) * 2, 0)
    draw = ImageDraw.Draw(canvas)
    for part in parts:
        points = part.points
        if style.jitter:
            points = points + rng.normal(0, style.jitter, 2) + rng.normal(0, style.jitter, points.shape)
        xy = (points @ matrix.T + offset).ravel().tolist()
        if part.kind == "stroke":
            draw.line(xy, fill=255, width=width, joint="curve")
            for x, y in (xy[:2], xy[-2:]):  # round pen ends
                draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
        else:
            draw.polygon(xy, fill=255 if part.kind == "fill" else 0)
    return canvas


def _coverage(canvas: Image.Image, outlined: bool, pen: int) -> np.ndarray:
    """Coverage in [0, 1] at 32x32; an outlined figure keeps only a rim ``pen`` pixels wide."""
    if outlined:
        canvas = ImageChops.subtract(canvas, canvas.filter(ImageFilter.MinFilter(2 * pen + 1)))
    return np.asarray(canvas.reduce(_SUPERSAMPLE), np.float32) / 255


def _fill(colour: np.ndarray, pattern: str, rng: np.random.Generator, style: Style) -> np.ndarray:
    """The paint inside a figure: its colour, or the colour and a lighter or darker tint in a pattern."""
    if pattern in ("solid", "outlined"):
        return np.broadcast_to(colour, (SIZE, SIZE, 3))
    tint = colour + (1 - colour) * 0.55 if colour.mean() < 0.5 else colour * 0.45
    mask = texture(pattern, rng, 0.7 * rng.uniform(*style.period), style.free_angle, style.warp)
    return tint + (colour - tint) * mask[..., None]


def _layout(facts: Facts, rng: np.random.Generator) -> list[tuple[tuple[float, float], float]]:
    """(centre in [0, 1]^2, height in pixels) of each copy of the thing."""
    count = COUNTS.index(facts.get("count", "one")) + 1
    if count == 1:
        size = facts.get("size", "medium")
        x, y = POSITIONS[facts["position"]]
        return [((x + rng.normal(0, 0.03), y + rng.normal(0, 0.03)), rng.uniform(*SIZES[size]))]
    cells = rng.choice(9, size=count, replace=False)
    return [(((c % 3 + 0.5) / 3 + rng.normal(0, 0.02), (c // 3 + 0.5) / 3 + rng.normal(0, 0.02)), 10.0) for c in cells]


def _paint(image: np.ndarray, coverage: np.ndarray, paint: np.ndarray) -> np.ndarray:
    return image + (paint - image) * coverage[..., None]


def _draw_thing(image: np.ndarray, facts: Facts, kind: str, rng: np.random.Generator, style: Style) -> np.ndarray:
    parts = FIGURES[kind][facts[kind]]
    pattern = facts.get("pattern", "solid")
    colour = _rgb(facts["colour"], rng)
    for centre, size in _layout(facts, rng):
        canvas = _figure_canvas(parts, centre, size, rng, style)
        pen = max(1, round(size / 10))
        image = _paint(image, _coverage(canvas, pattern == "outlined", pen), _fill(colour, pattern, rng, style))
    return image


def _draw_clutter(image: np.ndarray, rng: np.random.Generator, style: Style) -> np.ndarray:
    """Small stray shapes of any colour: distractors a downstream task may put behind its subject."""
    for _ in range(rng.integers(0, style.clutter + 1)):
        parts = SHAPES[_pick(rng, FAMILIES["shape"])]
        centre = (rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9))
        canvas = _figure_canvas(parts, centre, rng.uniform(5, 10), rng, style)
        image = _paint(image, _coverage(canvas, False, 1), _rgb(_pick(rng, style.colours), rng))
    return image


def _resample(image: np.ndarray, box: tuple[float, float, float, float], side: int) -> np.ndarray:
    """The ``box`` of ``image`` seen at ``side`` x ``side`` pixels, then shown at 32x32: zoom and blur alike."""
    pil = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
    pil = pil.resize((side, side), Image.BOX if side < SIZE else Image.BILINEAR, box=box)
    return np.asarray(pil.resize((SIZE, SIZE), Image.BILINEAR), np.float32) / 255


def _degrade(image: np.ndarray, rng: np.random.Generator, style: Style) -> np.ndarray:
    """The camera: zoom, low resolution, colour cast or black and white, and noise, then 8-bit pixels."""
    box = (0.0, 0.0, float(SIZE), float(SIZE))
    if style.zoom > 1:
        side = SIZE / rng.uniform(1, style.zoom)
        x0, y0 = rng.uniform(0, SIZE - side, 2)
        box = (x0, y0, x0 + side, y0 + side)
    lowres = rng.random() < style.lowres
    if lowres or style.zoom > 1:
        image = _resample(image, box, int(rng.integers(10, 17)) if lowres else SIZE)
    if style.tint:
        image = image * rng.uniform(1 - style.tint, 1 + style.tint, 3).astype(np.float32)
    if rng.random() < style.grey:
        image = np.repeat(image @ np.float32([0.299, 0.587, 0.114])[:, None], 3, axis=2)
    image = image + rng.standard_normal(image.shape, np.float32) * np.float32(rng.uniform(0, style.noise))
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def render(facts: Facts, kind: str, rng: np.random.Generator, style: Style = WORLD_STYLE) -> np.ndarray:
    """A (32, 32, 3) uint8 image showing ``facts``."""
    if kind == "background":
        image = _background(facts["background"], rng)
        image = _draw_clutter(image, rng, style)
    elif kind == "pattern":
        colour = _rgb(facts["colour"], rng)
        other = _rgb(_contrasting(rng, COLOURS[facts["colour"]], style.colours), rng)
        mask = texture(facts["pattern"], rng, rng.uniform(*style.period), style.free_angle, style.warp)
        image = _paint(np.broadcast_to(other, (SIZE, SIZE, 3)), mask, colour)
    else:
        image = _background(facts["background"], rng)
        image = _draw_clutter(image, rng, style)
        image = _draw_thing(image, facts, kind, rng, style)
    return _degrade(image, rng, style)


# ---------------------------------------------------------------------------------------------------------------
# The world as data

FACT_VOCABULARY = tuple(
    [(family, value) for family, values in FAMILIES.items() if family != "background" for value in values]
    + [("background", value) for value in (*SCENES, *COLOURS)]
)
_FACT_INDEX = {fact: i for i, fact in enumerate(FACT_VOCABULARY)}


def encode_facts(facts: Sequence[Facts]) -> np.ndarray:
    """(n, len(FACT_VOCABULARY)) bool: which facts each item states."""
    out = np.zeros((len(facts), len(FACT_VOCABULARY)), bool)
    for row, item in enumerate(facts):
        out[row, [_FACT_INDEX[fact] for fact in item.items()]] = True
    return out


def captions_true_of(caption_facts: np.ndarray, image_facts: np.ndarray) -> np.ndarray:
    """(images, captions) bool: caption j is true of image i when image i shows every fact caption j names."""
    missing = caption_facts.astype(np.float32) @ (~image_facts).astype(np.float32).T
    return (missing == 0).T


def stream_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """The generator of item ``index`` of a named stream: streams never share a draw, and any item is drawn alone."""
    return np.random.default_rng([seed, zlib.crc32(stream.encode()), index])


@dataclass(frozen=True)
class Pair:
    image: np.ndarray  # (32, 32, 3) uint8
    caption: str
    facts: dict[str, str]  # everything the image shows
    caption_facts: dict[str, str]  # what the caption names
    kind: str


@dataclass(frozen=True)
class World:
    """Image-caption pairs, a pure function of (seed, stream, index): "pretrain" trains, "heldout" measures."""

    seed: int = 0
    style: Style = WORLD_STYLE

    def pair(self, index: int, stream: str = "pretrain") -> Pair:
        rng = stream_rng(self.seed, stream, index)
        facts, kind = sample_facts(rng, self.style)
        image = render(facts, kind, rng, self.style)
        text, named = caption(facts, kind, rng)
        return Pair(image, text, facts, named, kind)

    def pairs(self, start: int, count: int, stream: str = "pretrain") -> list[Pair]:
        return [self.pair(index, stream) for index in range(start, start + count)]
