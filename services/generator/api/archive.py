"""A finished job as a streamed tar in WebDataset layout: ``{index:06d}.png``, ``.txt`` (prompt), ``.json``."""

from __future__ import annotations

import io
import json
import struct
import tarfile
from collections.abc import AsyncIterator

from gift_common.schemas import JobRequest, JobStatus


class _Sink(io.RawIOBase):
    """A write-only file that hands over what was written since the last drain."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def _png_size(png: bytes) -> dict[str, int]:
    """Width and height from the PNG header: the request may have left them to the model's native size."""
    width, height = struct.unpack(">II", png[16:24])
    return {"height": height, "width": width}


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
    tar.addfile(info, io.BytesIO(data))


async def tar_stream(
    status: JobStatus, request: JobRequest, members: AsyncIterator[tuple[int, bytes]]
) -> AsyncIterator[bytes]:
    """Yield the tar a member at a time, so a 4,096-image archive never sits whole in memory."""
    mtime = (status.finished_at or status.created_at).timestamp()
    by_index = {image.index: image for image in status.images}
    sink = _Sink()
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        async for index, png in members:
            image = by_index[index]
            meta = {
                "index": index,
                "seed": image.seed,
                "sha256": image.sha256,
                "model": request.model,
                "num_inference_steps": request.num_inference_steps,
                "guidance_scale": request.guidance_scale,
                "scheduler": request.scheduler,
                **_png_size(png),
                "negative_prompt": request.negative_prompt,
            }
            stem = f"{index:06d}"
            _add(tar, f"{stem}.png", png, mtime)
            _add(tar, f"{stem}.txt", image.prompt.encode(), mtime)
            _add(tar, f"{stem}.json", json.dumps(meta, sort_keys=True).encode(), mtime)
            yield sink.drain()
    yield sink.drain()
