"""The archive an adaptation job learns from: a tar (plain or gzip) of images and the captions that name them.

The layout (docs/API.md, ``POST /v1/adaptations``): ``captions.jsonl``, one ``{"file": ..., "caption": ...}`` a
line, and the PNG or JPEG files it names, flat, nothing else. The reader is the API's first check of an upload and
the worker's way in, so it trusts nothing: sizes are bounded before anything is decompressed or decoded, images are
decoded by PIL as PNG or JPEG only (nothing is ever unpickled), and each fault is a ValueError that names it.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image  # imported where images are read: the settings import this module, the client has no PIL

CAPTIONS = "captions.jsonl"
FORMATS = {"PNG": "png", "JPEG": "jpg"}
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class ArchiveLimits:
    """The most an archive may hold: images, bytes once decompressed, pixels of one image, characters of a caption."""

    max_images: int = 1000
    max_bytes: int = 256 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_caption_chars: int = 1000


def write_archive(pairs: Iterable[tuple[bytes, str]]) -> bytes:
    """A plain tar of the (PNG or JPEG bytes, caption) pairs, files named by their place: what ``read_archive``
    reads."""
    buffer, lines = io.BytesIO(), []
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for number, (data, caption) in enumerate(pairs):
            name = f"{number:05d}.{FORMATS[_format(data, f'image {number}')]}"
            _add(tar, name, data)
            lines.append(json.dumps({"file": name, "caption": caption}, ensure_ascii=False))
        _add(tar, CAPTIONS, "".join(f"{line}\n" for line in lines).encode())
    return buffer.getvalue()


def read_archive(data: bytes, limits: ArchiveLimits = ArchiveLimits()) -> list[tuple[Image.Image, str]]:
    """The archive's (RGB image, caption) pairs in captions.jsonl's order; ValueError naming the first fault."""
    return list(iter_archive(data, limits))


def check_archive(data: bytes, limits: ArchiveLimits = ArchiveLimits()) -> int:
    """How many images the archive holds, each decoded and let go: a check that never holds every image's pixels
    at once (a thousand large images would be gigabytes). ValueError naming the first fault."""
    return sum(1 for _ in iter_archive(data, limits))


def iter_archive(data: bytes, limits: ArchiveLimits = ArchiveLimits()) -> Iterator[tuple[Image.Image, str]]:
    """The pairs one at a time, each image decoded when it is reached; the archive's layout is checked first."""
    files = _members(_decompressed(data, limits.max_bytes), limits)
    if CAPTIONS not in files:
        raise ValueError(f"the archive has no {CAPTIONS}")
    captions = _captions(files.pop(CAPTIONS), limits)
    if unnamed := sorted(files.keys() - {name for name, _ in captions}):
        raise ValueError(f"{unnamed[0]}: a file {CAPTIONS} does not name")
    for name, caption in captions:
        yield _image(name, files.get(name), limits), caption


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _decompressed(data: bytes, max_bytes: int) -> bytes:
    """The tar's bytes; a gzip is inflated no further than ``max_bytes`` (a small bomb stays small)."""
    if not data.startswith(_GZIP_MAGIC):
        if len(data) > max_bytes:
            raise ValueError(f"the archive is larger than {max_bytes} bytes")
        return data
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            inflated = stream.read(max_bytes + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"the archive is not a readable gzip file: {error}") from None
    if len(inflated) > max_bytes:
        raise ValueError(f"the archive is larger than {max_bytes} bytes once decompressed")
    return inflated


def _members(data: bytes, limits: ArchiveLimits) -> dict[str, bytes]:
    """Each regular file's bytes by name; a link, a folder, a path, a repeated name or too many files is a fault."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                _check_member(member, files)
                if len(files) >= limits.max_images + 1:
                    raise ValueError(f"the archive holds more than {limits.max_images} images")
                extracted = tar.extractfile(member)
                assert extracted is not None  # a regular file always has content
                files[member.name] = extracted.read()
    except tarfile.TarError as error:
        raise ValueError(f"the archive is not a tar file (plain or gzip): {error}") from None
    return files


def _check_member(member: tarfile.TarInfo, seen: dict[str, bytes]) -> None:
    name = member.name
    if member.issym() or member.islnk():
        raise ValueError(f"{name}: a link; the archive may hold only files")
    if not member.isreg():
        raise ValueError(f"{name}: not a regular file; the archive may hold only files, flat")
    if "/" in name or "\\" in name or name.startswith(".") or not name:
        raise ValueError(f"{name}: a path; the archive's files must be flat, with plain names")
    if name in seen:
        raise ValueError(f"{name}: in the archive twice")


def _captions(data: bytes, limits: ArchiveLimits) -> list[tuple[str, str]]:
    """captions.jsonl's (file, caption) pairs, each file named once."""
    pairs: list[tuple[str, str]] = []
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ValueError(f"{CAPTIONS} is not UTF-8 text") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            pairs.append(_caption_line(line, f"{CAPTIONS} line {number}", limits))
    if not pairs:
        raise ValueError(f"{CAPTIONS} names no image")
    if len({name for name, _ in pairs}) < len(pairs):
        raise ValueError(f"{CAPTIONS} names a file twice")
    return pairs


def _caption_line(line: str, where: str, limits: ArchiveLimits) -> tuple[str, str]:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not JSON ({error.msg})") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise ValueError(f'{where}: not an object with a "file" text')
    caption = entry.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f'{where}: "caption" must be a text that is not blank')
    if len(caption) > limits.max_caption_chars:
        raise ValueError(f"{where}: the caption is longer than {limits.max_caption_chars} characters")
    return entry["file"], caption


def _format(data: bytes, name: str) -> str:
    """PNG or JPEG, by what PIL reads in the bytes' header."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=list(FORMATS)) as image:
            return str(image.format)
    except (OSError, ValueError, Image.DecompressionBombError):
        raise ValueError(f"{name}: not a PNG or JPEG image") from None


def _image(name: str, data: bytes | None, limits: ArchiveLimits) -> Image.Image:
    """The file decoded as an RGB image; its size is checked before its pixels are decoded."""
    from PIL import Image

    if data is None:
        raise ValueError(f"{name}: named in {CAPTIONS} but not in the archive")
    try:
        with Image.open(io.BytesIO(data), formats=list(FORMATS)) as image:
            width, height = image.size
            if width * height > limits.max_pixels:
                raise ValueError(f"{name}: {width}x{height} is more than {limits.max_pixels} pixels")
            return image.convert("RGB")
    except (OSError, SyntaxError, Image.DecompressionBombError):
        raise ValueError(f"{name}: not a readable PNG or JPEG image") from None
