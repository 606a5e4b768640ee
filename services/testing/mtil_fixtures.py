"""Tiny copies of the eleven MTIL datasets, on disk exactly as torchvision's classes read them.

A user's disk holds the archives already extracted (`services/trainer/datasets.py: TORCHVISION` names the roots);
these copies hold the same files and folders with a few images per class, so that the loaders, the class lists and
the label order are checked without the real data. Every image is one flat colour that encodes its label
(`label_color`, read back by `label_of`): a test sees through torchvision which label each file was given.
Class identifiers are torchvision's on-disk ones (folder names, list entries, `.mat` fields), in the order of the
MTIL metadata; where they cannot be derived from its class names they come from `torchvision_names.json`.
"""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from services.trainer.sources import MTIL_DATASETS, mtil_metadata

NAMES_FILE = Path(__file__).parent / "torchvision_names.json"
IMAGE_SIZE = 32
LEVELS = 8  # label = r + 8 g + 64 b, each channel one of 8 levels: 512 labels, wide margins against JPEG's error
STEP = 256 // LEVELS
GRAY_STEP = 256 // 10  # MNIST's grey images: one level per digit
OXFORD_CATS = {  # the twelve cat breeds (species 1, capitalised file names); the other 25 breeds are dogs
    "Abyssinian", "Bengal", "Birman", "Bombay", "British Shorthair", "Egyptian Mau",
    "Maine Coon", "Persian", "Ragdoll", "Russian Blue", "Siamese", "Sphynx",
}  # fmt: skip


def label_color(label: int) -> tuple[int, int, int]:
    digits = (label % LEVELS, label // LEVELS % LEVELS, label // LEVELS**2)
    return tuple(d * STEP + STEP // 2 for d in digits)  # type: ignore[return-value]


def label_of(image: Image.Image) -> int:
    """The label a fixture image encodes (MNIST's grey ones: `label_gray`)."""
    if image.mode == "L":
        return image.getpixel((IMAGE_SIZE // 2, IMAGE_SIZE // 2)) // GRAY_STEP
    r, g, b = image.convert("RGB").getpixel((IMAGE_SIZE // 2, IMAGE_SIZE // 2))
    return r // STEP + LEVELS * (g // STEP) + LEVELS**2 * (b // STEP)


def label_gray(label: int) -> int:
    return label * GRAY_STEP + GRAY_STEP // 2


def torchvision_names(dataset: str) -> list[str]:
    """Class identifiers as they stand on a user's disk, in torchvision's label order."""
    listed = json.loads(NAMES_FILE.read_text())
    names = mtil_metadata()[dataset]["classnames"]
    if dataset in listed:
        return listed[dataset]
    if dataset in ("CIFAR100", "Food"):
        return [name.replace(" ", "_") for name in names]
    return names


def _jpeg(path: Path, label: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), label_color(label)).save(path, quality=95)


def _lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def _savemat(path: Path, content: dict) -> None:
    import scipy.io

    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, content)


# --- one writer per dataset: (MTIL root, images per class and split) -------------------------------------------


def _aircraft(root: Path, n: int) -> None:
    """The archive's train, val and test lists, and trainval (train and val): MTIL trains on train alone."""
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = torchvision_names("Aircraft")
    _lines(data / "variants.txt", variants)
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for label, variant in enumerate(variants):
        for k in range(3 * n):
            image_id = f"{1000000 + label * 3 * n + k}"
            _jpeg(data / "images" / f"{image_id}.jpg", label)
            lists[("train", "val", "test")[k // n]].append(f"{image_id} {variant}")
    lists["trainval"] = lists["train"] + lists["val"]
    for split, entries in lists.items():
        _lines(data / f"images_variant_{split}.txt", entries)


def _caltech101(root: Path, n: int) -> None:
    folders = torchvision_names("Caltech101")
    real = sorted(name for name in folders if name != "BACKGROUND_Google")
    for folder in folders:
        label = real.index(folder) if folder in real else 0  # the background folder is no class: any colour
        for k in range(1, 2 * n + 1):
            _jpeg(root / "caltech101" / "101_ObjectCategories" / folder / f"image_{k:04d}.jpg", label)


def _cifar100(root: Path, n: int) -> None:
    base = root / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    names = torchvision_names("CIFAR100")
    for split in ("train", "test"):
        labels = [label for label in range(len(names)) for _ in range(n)]
        pixels = np.stack([np.broadcast_to(np.array(label_color(y), np.uint8)[:, None], (3, 1024)) for y in labels])
        batch = {
            "filenames": [f"{names[y]}_s_{i:06d}.png" for i, y in enumerate(labels)],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": labels,
            "coarse_labels": [0] * len(labels),
            "data": pixels.reshape(len(labels), 3072),
        }
        (base / split).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"fine_label_names": names, "coarse_label_names": ["all"]}
    (base / "meta").write_bytes(pickle.dumps(meta, protocol=2))


def _dtd(root: Path, n: int) -> None:
    data = root / "dtd" / "dtd"
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for label, texture in enumerate(torchvision_names("DTD")):
        for k in range(3 * n):
            name = f"{texture}_{k + 1:04d}.jpg"
            _jpeg(data / "images" / texture / name, label)
            lists[("train", "val", "test")[k // n]].append(f"{texture}/{name}")
    for split, entries in lists.items():
        _lines(data / "labels" / f"{split}1.txt", entries)


def _eurosat(root: Path, n: int) -> None:
    for label, folder in enumerate(torchvision_names("EuroSAT")):
        for k in range(1, 2 * n + 1):
            _jpeg(root / "eurosat" / "2750" / folder / f"{folder}_{k}.jpg", label)


def _flowers(root: Path, n: int) -> None:
    base = root / "flowers-102"
    count = len(torchvision_names("Flowers"))
    labels = [label for label in range(count) for _ in range(3 * n)]  # image i (from 1) shows labels[i - 1]
    for image_id, label in enumerate(labels, 1):
        _jpeg(base / "jpg" / f"image_{image_id:05d}.jpg", label)
    _savemat(base / "imagelabels.mat", {"labels": np.array([labels], np.uint8) + 1})
    ids = {
        split: [i for i, _ in enumerate(labels, 1) if (i - 1) % (3 * n) // n == part]
        for part, split in enumerate(("trnid", "valid", "tstid"))
    }
    _savemat(base / "setid.mat", {split: np.array([found], np.uint16) for split, found in ids.items()})


def _food(root: Path, n: int) -> None:
    base = root / "food-101"
    names = torchvision_names("Food")
    _lines(base / "meta" / "classes.txt", names)
    _lines(base / "meta" / "labels.txt", mtil_metadata()["Food"]["classnames"])
    for split, offset in (("train", 0), ("test", n)):
        listed = {
            food: [f"{food}/{100000 + label * 2 * n + offset + k}" for k in range(n)]
            for label, food in enumerate(names)
        }
        for label, food in enumerate(names):
            for entry in listed[food]:
                _jpeg(base / "images" / f"{entry}.jpg", label)
        (base / "meta" / f"{split}.json").write_text(json.dumps(listed))
        _lines(base / "meta" / f"{split}.txt", [entry for entries in listed.values() for entry in entries])


def _mnist(root: Path, n: int) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        labels = [label for label in range(10) for _ in range(n)]
        images = np.array([np.full((28, 28), label_gray(y), np.uint8) for y in labels])
        header = struct.pack(">IIII", 2051, len(labels), 28, 28)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, len(labels)) + bytes(labels))


def _oxford_pet(root: Path, n: int) -> None:
    base = root / "oxford-iiit-pet"
    lists: dict[str, list[str]] = {"trainval": [], "test": []}
    for label, breed in enumerate(torchvision_names("OxfordPet")):
        cat = breed in OXFORD_CATS
        stem = breed.replace(" ", "_") if cat else breed.lower().replace(" ", "_")
        for k in range(2 * n):
            image_id = f"{stem}_{k + 1}"
            _jpeg(base / "images" / f"{image_id}.jpg", label)
            lists["trainval" if k < n else "test"].append(f"{image_id} {label + 1} {1 if cat else 2} {k + 1}")
    for split, entries in lists.items():
        _lines(base / "annotations" / f"{split}.txt", entries)


def _stanford_cars(root: Path, n: int) -> None:
    base = root / "stanford_cars"
    names = torchvision_names("StanfordCars")
    _savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})
    fields = [(field, object) for field in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    for split, annotations_file in (
        ("train", base / "devkit" / "cars_train_annos.mat"),
        ("test", base / "cars_test_annos_withlabels.mat"),
    ):
        records = np.zeros((1, len(names) * n), dtype=fields)
        for i in range(len(names) * n):
            label, fname = i // n, f"{i + 1:05d}.jpg"
            records[0, i] = (0, 0, IMAGE_SIZE - 1, IMAGE_SIZE - 1, label + 1, fname)
            _jpeg(base / f"cars_{split}" / fname, label)
        _savemat(annotations_file, {"annotations": records})


def _sun397(root: Path, n: int) -> None:
    base = root / "SUN397"
    paths = torchvision_names("SUN397")
    _lines(base / "ClassName.txt", paths)
    for label, path in enumerate(paths):
        for k in range(2 * n):
            _jpeg(base / path.lstrip("/") / f"sun_{label:04d}{k:04d}fixture.jpg", label)


WRITERS: dict[str, Callable[[Path, int], None]] = {
    "Aircraft": _aircraft,
    "Caltech101": _caltech101,
    "CIFAR100": _cifar100,
    "DTD": _dtd,
    "EuroSAT": _eurosat,
    "Flowers": _flowers,
    "Food": _food,
    "MNIST": _mnist,
    "OxfordPet": _oxford_pet,
    "StanfordCars": _stanford_cars,
    "SUN397": _sun397,
}


def write_fixtures(out: Path, per_class: int = 2, datasets: tuple[str, ...] = MTIL_DATASETS) -> Path:
    """Write the datasets under `out` (the `root` of every MTIL task); `per_class` images per class and split."""
    for name in datasets:
        WRITERS[name](out, per_class)
    return out
