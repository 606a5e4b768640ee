"""Task datasets: the eleven MTIL datasets through torchvision, ImageFolder trees and CSV lists from local files,
and the embedded tiny world's tasks, which are drawn.

Nothing downloads: a missing or incomplete root is a UserError naming the task, the dataset and the path. Every
dataset yields (image tensor, label) with labels indexing the task's class names, which ship for the MTIL datasets
in `data/mtil.json` (in torchvision's label order) together with the prompt template the GIFT authors used.

Splits are train, val and test. The tiny world has its own val splits; elsewhere val is a fixed part of train
(`val_fraction`), left out of training only when a run evaluates on val, so that settings are chosen on val and
reported on test.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

import torch
import torchvision.datasets as tv
from PIL import Image
from torch.utils.data import Dataset, Subset

from gift_common.errors import UserError
from services.trainer.config import DEFAULT_TEMPLATE, DatasetConfig, TaskConfig
from tinyworld import tasks as tinyworld
from tinyworld.world import CONCEPT_NAMES

DATA_DIR = Path(__file__).parent / "data"
SPLIT_SEED = 0  # the held-out split of datasets without an official one is the same for every run
VAL_SEED = 1  # so is the val part of train, drawn independently of the held-out split

Split = Literal["train", "val", "test"]

Transform = Callable[[Image.Image], torch.Tensor]

# MTIL name -> (torchvision class, its keyword for the train / test split, where it looks under root)
TORCHVISION: dict[str, tuple[type[Dataset], tuple[dict[str, Any], dict[str, Any]] | None, str]] = {
    "Aircraft": (tv.FGVCAircraft, ({"split": "trainval"}, {"split": "test"}), "fgvc-aircraft-2013b/"),
    "Caltech101": (tv.Caltech101, None, "caltech101/101_ObjectCategories/"),
    "CIFAR100": (tv.CIFAR100, ({"train": True}, {"train": False}), "cifar-100-python/"),
    "DTD": (tv.DTD, ({"split": "train"}, {"split": "test"}), "dtd/dtd/images/"),
    "EuroSAT": (tv.EuroSAT, None, "eurosat/2750/"),
    "Flowers": (tv.Flowers102, ({"split": "train"}, {"split": "test"}), "flowers-102/jpg/"),
    "Food": (tv.Food101, ({"split": "train"}, {"split": "test"}), "food-101/images/"),
    "MNIST": (tv.MNIST, ({"train": True}, {"train": False}), "MNIST/raw/"),
    "OxfordPet": (tv.OxfordIIITPet, ({"split": "trainval"}, {"split": "test"}), "oxford-iiit-pet/images/"),
    "StanfordCars": (tv.StanfordCars, ({"split": "train"}, {"split": "test"}), "stanford_cars/"),
    "SUN397": (tv.SUN397, None, "SUN397/"),
}


@cache
def mtil_metadata() -> dict[str, dict[str, list[str]]]:
    """Class names (torchvision's label order) and templates of each MTIL dataset."""
    return {k: v for k, v in json.loads((DATA_DIR / "mtil.json").read_text()).items() if not k.startswith("_")}


@cache
def imagenet_classnames() -> list[str]:
    """ImageNet's 1,000 class names (CLIP's cleaned wording): the pre-training concepts of METHOD.md."""
    return (DATA_DIR / "imagenet_classnames.txt").read_text().splitlines()


def concept_names(spec: str) -> list[str]:
    """'imagenet', 'tinyworld' (the world's concept names), or a text file with one concept per line (blank lines
    ignored)."""
    if spec == "imagenet":
        return imagenet_classnames()
    if spec == "tinyworld":
        return list(CONCEPT_NAMES)
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"synthetic.concepts: {path} is not a file; give 'imagenet' or a file with one name per line")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise UserError(f"synthetic.concepts: {path} lists no concept")
    return names


def classnames(task: TaskConfig) -> list[str]:
    """The task's class names: its own, else the dataset's (MTIL table, or ImageFolder's folder names)."""
    if task.classnames is not None:
        return task.classnames
    spec = task.dataset
    if spec.type == "tinyworld":
        return list(tinyworld.TASKS[str(spec.task)].classnames)
    if spec.type == "imagefolder":
        folder = _existing(task, _root(task) / "train")
        return [
            entry.name.replace("_", " ") for entry in sorted(folder.iterdir(), key=lambda p: p.name) if entry.is_dir()
        ]
    if spec.type == "csv":
        raise UserError(f"task {task.label}: a CSV dataset needs 'classnames' (label i names classnames[i])")
    return mtil_metadata()[spec.type]["classnames"]


def templates(task: TaskConfig) -> list[str]:
    """The task's prompt templates: its own, else the dataset's, else "a photo of a {}."."""
    if task.templates is not None:
        return task.templates
    if task.dataset.type == "tinyworld":
        return list(tinyworld.TASKS[str(task.dataset.task)].templates)
    return mtil_metadata().get(task.dataset.type, {}).get("templates", [DEFAULT_TEMPLATE])


def load_split(
    task: TaskConfig, names: Sequence[str], split: Split, transform: Transform, hold_out_val: bool = False
) -> Dataset:
    """The task's split as (image tensor, label) pairs, checked against its class names.

    Val is the tiny world's own, else a fixed part of train; train leaves that part out when `hold_out_val`.
    """
    if task.dataset.type == "tinyworld":
        return _tinyworld(task, names, split, transform)
    source = _load(task, names, train=split != "test", transform=transform)
    if split == "val" or (split == "train" and hold_out_val):
        return val_split(source, task.dataset.val_fraction, val=split == "val")
    return source


def _load(task: TaskConfig, names: Sequence[str], train: bool, transform: Transform) -> Dataset:
    spec, root = task.dataset, _root(task)
    _existing(task, root)
    if spec.type == "csv":
        return CsvImages(_existing(task, root / ("train.csv" if train else "test.csv")), names, transform)
    if spec.type == "imagefolder":
        dataset = _imagefolder(task, root / ("train" if train else "test"), transform)
    else:
        dataset = _torchvision(task, spec, train, transform)
    _check_class_count(task, dataset, names)
    return dataset


def _tinyworld(task: TaskConfig, names: Sequence[str], split: Split, transform: Transform) -> Dataset:
    spec = tinyworld.TASKS[str(task.dataset.task)]
    if len(names) != len(spec.classnames):
        raise UserError(f"task {task.label}: {len(names)} class names for tinyworld's {len(spec.classnames)} classes")
    return tinyworld.load_split(spec.name, split, seed=task.dataset.seed, transform=transform)


def val_split(train: Dataset, val_fraction: float, val: bool) -> Subset:
    """The val part of a train split (or the rest), the same for every run: a fixed permutation, as in
    `held_out_split`."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(VAL_SEED)).tolist()
    n_val = round(len(order) * val_fraction)
    subset = Subset(train, order[:n_val] if val else order[n_val:])
    subset.classes = _dataset_classes(train)  # type: ignore[attr-defined]
    return subset


def _imagefolder(task: TaskConfig, folder: Path, transform: Transform) -> Dataset:
    try:
        return tv.ImageFolder(str(_existing(task, folder)), transform=transform)
    except FileNotFoundError as error:
        raise UserError(f"task {task.label} (imagefolder): {error}") from None


def _torchvision(task: TaskConfig, spec: DatasetConfig, train: bool, transform: Transform) -> Dataset:
    cls, splits, layout, root = *TORCHVISION[spec.type], _root(task)
    try:
        dataset = cls(str(root), transform=transform, **({} if splits is None else splits[0 if train else 1]))
    except RuntimeError as error:
        raise UserError(
            f"task {task.label}: torchvision's {cls.__name__} finds no data under {root} ({error}); put the "
            f"dataset there as its download would, i.e. {root / layout}... (nothing is downloaded)"
        ) from None
    return dataset if splits is not None else held_out_split(dataset, spec.test_fraction, train)


def held_out_split(dataset: Dataset, test_fraction: float, train: bool) -> Subset:
    """A fixed random split for datasets torchvision does not split (Caltech101, EuroSAT, SUN397)."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    n_test = round(len(order) * test_fraction)
    subset = Subset(dataset, order[n_test:] if train else order[:n_test])
    subset.classes = _dataset_classes(dataset)  # type: ignore[attr-defined]
    return subset


def _dataset_classes(dataset: Dataset) -> list[str] | None:
    """The class list a torchvision dataset carries, under whichever name it uses (none for Flowers102)."""
    return getattr(dataset, "classes", None) or getattr(dataset, "categories", None)


def _check_class_count(task: TaskConfig, dataset: Dataset, names: Sequence[str]) -> None:
    found = _dataset_classes(dataset)
    if found is not None and len(found) != len(names):
        raise UserError(f"task {task.label}: {len(names)} class names for a dataset of {len(found)} classes")


def _root(task: TaskConfig) -> Path:
    """The dataset's root; the config makes sure every type that reads files has one."""
    assert task.dataset.root is not None, f"task {task.label}: no root"
    return task.dataset.root


def _existing(task: TaskConfig, path: Path) -> Path:
    if not path.exists():
        raise UserError(f"task {task.label} ({task.dataset.type}): {path} does not exist")
    return path


class CsvImages(Dataset):
    """Images listed in a CSV with a header `path,label`: paths relative to the CSV, labels an index or a class name."""

    def __init__(self, csv_path: Path, names: Sequence[str], transform: Transform) -> None:
        self.transform = transform
        self.classes = list(names)
        self.samples = _read_csv(csv_path, {name: i for i, name in enumerate(names)})

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        with Image.open(path) as image:
            return self.transform(image), label


def _read_csv(csv_path: Path, index_of: dict[str, int]) -> list[tuple[Path, int]]:
    with csv_path.open(newline="") as file:
        reader = csv.DictReader(file)
        if not {"path", "label"} <= set(reader.fieldnames or ()):
            raise UserError(f"{csv_path}: the first line must name the columns 'path' and 'label'")
        samples = [_csv_sample(csv_path, reader.line_num, row, index_of) for row in reader]
    if not samples:
        raise UserError(f"{csv_path}: lists no image")
    return samples


def _csv_sample(csv_path: Path, line: int, row: dict[str, str], index_of: dict[str, int]) -> tuple[Path, int]:
    path, label = csv_path.parent / row["path"], row["label"].strip()
    if not path.is_file():
        raise UserError(f"{csv_path}, line {line}: image {path} does not exist")
    if label.isdigit() and int(label) < len(index_of):
        return path, int(label)
    if label in index_of:
        return path, index_of[label]
    raise UserError(
        f"{csv_path}, line {line}: label {label!r} is neither a class index below {len(index_of)} nor a class name"
    )
