"""Reading an offline Weights & Biases run back: its `run-ID.wandb` file, records in LevelDB's log format.

The wandb package writes these files but no longer ships a reader for them; `wandb sync` is what reads them in
production. The format: a 7-byte header (`:W&B`, a magic, a version), then 32 KiB blocks of chunks, each with a
7-byte header (CRC, length, type: 1 whole, 2 first, 3 middle, 4 last of a record); every record a protobuf Record.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK, HEADER = 32768, 7
WHOLE, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if not data.startswith(b":W&B"):
        raise ValueError(f"{path} is not a W&B run file")
    found, pending, position = [], b"", HEADER
    while position + HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < HEADER:  # the block's tail is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        chunk = data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind == WHOLE:
            found.append(chunk)
        elif kind in (FIRST, MIDDLE):
            pending = chunk if kind == FIRST else pending + chunk
        elif kind == LAST:
            found.append(pending + chunk)
        else:  # zeros: padding up to the block's end
            position += BLOCK - position % BLOCK if position % BLOCK else 0
    return found


def history(run_dir: Path) -> list[dict[str, Any]]:
    """Every `run.log` call of the offline run in `run_dir` (wandb/offline-run-*), its values decoded from JSON."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    rows = []
    for raw in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})  # fmt: skip
    return rows
