"""An adaptation job's archive: what the writer makes the reader reads back; each fault is a ValueError naming it."""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile

import pytest
from PIL import Image

from gift_common.adaptation_archive import CAPTIONS, ArchiveLimits, check_archive, read_archive, write_archive


def _image_bytes(color: tuple[int, int, int], fmt: str = "PNG", size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def _tar(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def _captions(*entries: tuple[str, str]) -> bytes:
    return "".join(json.dumps({"file": f, "caption": c}) + "\n" for f, c in entries).encode()


def test_what_is_written_is_read_back_in_order_as_rgb_images() -> None:
    pairs = [(_image_bytes((255, 0, 0)), "a red square."), (_image_bytes((0, 0, 255), "JPEG"), "a blue ünïcode one.")]
    read = read_archive(write_archive(pairs))
    assert [caption for _, caption in read] == ["a red square.", "a blue ünïcode one."]
    assert [(image.mode, image.size) for image, _ in read] == [("RGB", (8, 6))] * 2
    assert read[0][0].getpixel((0, 0)) == (255, 0, 0)
    red, green, blue = read[1][0].getpixel((3, 3))  # type: ignore[misc]  # an RGB pixel is a triple
    assert blue > 200 and red < 50 and green < 50  # JPEG is lossy; blue stays blue


def test_a_gzip_archive_reads_like_the_plain_one() -> None:
    archive = write_archive([(_image_bytes((1, 2, 3)), "a dark square.")])
    assert [c for _, c in read_archive(gzip.compress(archive))] == ["a dark square."]


def test_the_writer_refuses_bytes_that_are_not_an_image() -> None:
    with pytest.raises(ValueError, match="image 0: not a PNG or JPEG image"):
        write_archive([(b"not an image", "text")])


PNG = _image_bytes((9, 9, 9))


@pytest.mark.parametrize(
    ("data", "fault"),
    [
        (b"just some text, not a tar" * 40, "not a tar file"),
        (gzip.compress(b"x" * 1000), "not a tar file"),
        (b"\x1f\x8b broken gzip", "not a readable gzip file"),
        (_tar({"a.png": PNG}), f"has no {CAPTIONS}"),
        (_tar({CAPTIONS: _captions(("a.png", "a"))}), "a.png: named in captions.jsonl but not in the archive"),
        (_tar({CAPTIONS: _captions(("a.png", "a")), "a.png": PNG, "b.png": PNG}), "b.png: a file captions.jsonl"),
        (_tar({CAPTIONS: _captions(("a.png", "a")), "a.png": b"\x89PNG but not really"}), "a.png: not a readable"),
        (_tar({CAPTIONS: _captions(("a.png", "a")), "a.png": b"import pickle"}), "a.png: not a readable"),
        (_tar({CAPTIONS: _captions(("a.png", "a")), "a.png": PNG}, {"b.png": "/etc/passwd"}), "b.png: a link"),
        (_tar({CAPTIONS: _captions(("d/a.png", "a")), "d/a.png": PNG}), "d/a.png: a path"),
        (_tar({CAPTIONS: b"{not json\n", "a.png": PNG}), "captions.jsonl line 1: not JSON"),
        (_tar({CAPTIONS: b'{"file": "a.png"}\n', "a.png": PNG}), 'line 1: "caption" must be a text'),
        (_tar({CAPTIONS: b'["a.png", "a"]\n', "a.png": PNG}), 'line 1: not an object with a "file"'),
        (_tar({CAPTIONS: b"\n\n"}), "captions.jsonl names no image"),
        (_tar({CAPTIONS: _captions(("a.png", "a"), ("a.png", "b")), "a.png": PNG}), "names a file twice"),
        (_tar({CAPTIONS: b"\xff\xfe", "a.png": PNG}), "not UTF-8 text"),
    ],
)
def test_each_fault_is_a_value_error_that_names_it(data: bytes, fault: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fault)):
        read_archive(data)
    with pytest.raises(ValueError, match=re.escape(fault)):
        check_archive(data)


def test_the_limits_are_applied_before_anything_is_decoded() -> None:
    three = write_archive([(PNG, "one"), (PNG, "two"), (PNG, "three")])
    with pytest.raises(ValueError, match="more than 2 images"):
        read_archive(three, ArchiveLimits(max_images=2))
    assert (
        len(read_archive(three, ArchiveLimits(max_images=3))) == check_archive(three, ArchiveLimits(max_images=3)) == 3
    )
    with pytest.raises(ValueError, match="larger than 1000 bytes"):
        read_archive(three, ArchiveLimits(max_bytes=1000))
    bomb = gzip.compress(_tar({CAPTIONS: b" " * 5_000_000}))
    with pytest.raises(ValueError, match="larger than 100000 bytes once decompressed"):
        read_archive(bomb, ArchiveLimits(max_bytes=100_000))
    big = write_archive([(_image_bytes((0, 0, 0), size=(64, 64)), "large")])
    with pytest.raises(ValueError, match=r"00000\.png: 64x64 is more than 1000 pixels"):
        read_archive(big, ArchiveLimits(max_pixels=1000))
    with pytest.raises(ValueError, match="longer than 3 characters"):
        read_archive(three, ArchiveLimits(max_caption_chars=3))
