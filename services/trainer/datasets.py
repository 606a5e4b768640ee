"""Task data: the splits every run reads through the dataset sources it names (sources.py), and how the built-in
ones read their files.

A run config's `dataset: {type: NAME, ...}` names a source of `SOURCES`: the eleven MTIL datasets through
torchvision, ImageFolder trees and CSV lists from local files are built in; plugins add theirs (`gift.datasets`,
see services/trainer/plugins.py). Nothing downloads: a missing or incomplete root is a UserError naming the task,
the dataset and the path. Every dataset yields (image tensor, label) with labels indexing the task's class names,
which ship for the MTIL datasets in `data/mtil.json` (in torchvision's label order) together with the benchmark's
prompt templates (docs/mtil-protocol.md).

Splits are train, val and test. Sources with val splits of their own serve them; elsewhere val is a fixed part of
train (`val_fraction`), left out of training only when a run evaluates on val, so that settings are chosen on val
and reported on test.
"""

from __future__ import annotations

import csv
import os
import pickle
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torchvision.datasets as tv
from PIL import Image
from torch.utils.data import Dataset, Subset, random_split

from gift_common.errors import UserError
from services.trainer.fields import DEFAULT_TEMPLATE
from services.trainer.plugins import DatasetSource, Split, Transform
from services.trainer.sources import DEFAULT_VAL_FRACTION, SOURCES, MtilOptions

if TYPE_CHECKING:
    from services.trainer.config import TaskConfig

SPLIT_SEED = 42  # the MTIL split of datasets without an official one: ZSCL's and the GIFT authors' (mtil-protocol.md)
VAL_SEED = 1  # the val part of train is the same for every run too, drawn independently of the held-out split


class Cifar100Files(tv.CIFAR100):
    """CIFAR-100 whose files are checked by reading them, not against the MD5s of the published pickles.

    The MD5s reject any other copy of the same data (tiny test copies, pickles re-saved by another tool) with
    "not found or corrupted"; a file that is not a CIFAR pickle still fails, while read, with an error naming it.
    """

    train_list: ClassVar = [["train", None]]
    test_list: ClassVar = [["test", None]]
    meta: ClassVar = {**tv.CIFAR100.meta, "md5": None}


class Flowers102Files(tv.Flowers102):
    """Flowers102 whose `.mat` files are checked by reading them, not against MD5s (as `Cifar100Files`)."""

    _file_dict: ClassVar = {key: (name, None) for key, (name, _) in tv.Flowers102._file_dict.items()}


@dataclass(frozen=True)
class Torchvision:
    """How an MTIL dataset is read: its torchvision class, the keywords of its train and test split (None: it has
    no official split) and the files and folders (ending in /) each split reads under root."""

    cls: type[Dataset]
    splits: tuple[dict[str, Any], dict[str, Any]] | None
    train_files: tuple[str, ...]
    test_files: tuple[str, ...] | None = None  # None: the same as train's

    def files(self, train: bool) -> tuple[str, ...]:
        return self.train_files if train or self.test_files is None else self.test_files


def _each_split(*files: str, words: tuple[str, str] = ("train", "test")) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The files of the train and the test split, `{}` in a name standing for the split's word."""
    return tuple(tuple(name.format(word) for name in files) for word in words)  # type: ignore[return-value]


_MNIST_FILES = tuple(
    f"MNIST/raw/{split}-{kind}-ubyte" for split in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")
)
_CARS = "stanford_cars/"
TORCHVISION: dict[str, Torchvision] = {
    "Aircraft": Torchvision(tv.FGVCAircraft, ({"split": "train"}, {"split": "test"}), *_each_split(
        "fgvc-aircraft-2013b/data/variants.txt", "fgvc-aircraft-2013b/data/images/",
        "fgvc-aircraft-2013b/data/images_variant_{}.txt")),
    "Caltech101": Torchvision(tv.Caltech101, None, ("caltech101/101_ObjectCategories/",)),
    "CIFAR100": Torchvision(Cifar100Files, ({"train": True}, {"train": False}), *_each_split(
        "cifar-100-python/{}", "cifar-100-python/meta")),
    "DTD": Torchvision(tv.DTD, ({"split": "train"}, {"split": "test"}), *_each_split(
        "dtd/dtd/images/", "dtd/dtd/labels/{}1.txt")),
    "EuroSAT": Torchvision(tv.EuroSAT, None, ("eurosat/2750/",)),
    "Flowers": Torchvision(Flowers102Files, ({"split": "train"}, {"split": "test"}), (
        "flowers-102/jpg/", "flowers-102/imagelabels.mat", "flowers-102/setid.mat")),
    "Food": Torchvision(tv.Food101, ({"split": "train"}, {"split": "test"}), *_each_split(
        "food-101/images/", "food-101/meta/{}.json")),
    "MNIST": Torchvision(tv.MNIST, ({"train": True}, {"train": False}), _MNIST_FILES),
    "OxfordPet": Torchvision(tv.OxfordIIITPet, ({"split": "trainval"}, {"split": "test"}), *_each_split(
        "oxford-iiit-pet/images/", "oxford-iiit-pet/annotations/{}.txt", words=("trainval", "test"))),
    "StanfordCars": Torchvision(tv.StanfordCars, ({"split": "train"}, {"split": "test"}),
        (f"{_CARS}devkit/cars_meta.mat", f"{_CARS}devkit/cars_train_annos.mat", f"{_CARS}cars_train/"),
        (f"{_CARS}devkit/cars_meta.mat", f"{_CARS}cars_test_annos_withlabels.mat", f"{_CARS}cars_test/")),
    "SUN397": Torchvision(tv.SUN397, None, ("SUN397/ClassName.txt",)),
}  # fmt: skip
# What torchvision raises for files it cannot parse: a truncated pickle, a .mat or idx file of another layout, a list
# line without its fields or naming an unknown class (MNIST's reader asserts on an idx header).
_UNREADABLE = (
    RuntimeError,
    OSError,
    ValueError,
    KeyError,
    IndexError,
    EOFError,
    AssertionError,
    pickle.UnpicklingError,
)


# --- what the runner asks for -----------------------------------------------------------------------------------


def classnames(task: TaskConfig) -> list[str]:
    """The task's class names: its own, else its source's (MTIL table, ImageFolder's folder names, a plugin's)."""
    if task.classnames is not None:
        return task.classnames
    with _about(task):
        return _source(task).classnames(task.dataset)


def templates(task: TaskConfig) -> list[str]:
    """The task's prompt templates: its own, else its source's, else "a photo of a {}."."""
    if task.templates is not None:
        return task.templates
    return _source(task).templates(task.dataset) or [DEFAULT_TEMPLATE]


def load_split(
    task: TaskConfig, names: Sequence[str], split: Split, transform: Transform, hold_out_val: bool = False
) -> Dataset:
    """The task's split as (image tensor, label) pairs, checked against its class names.

    Val is the source's own where it has one, else a fixed part of train; train leaves that part out when
    `hold_out_val`.
    """
    source = _source(task)
    with _about(task):
        if source.has_val:
            dataset = source.load(task.dataset, split, transform, names)
        else:
            dataset = source.load(task.dataset, "test" if split == "test" else "train", transform, names)
            if split == "val" or (split == "train" and hold_out_val):
                fraction = getattr(task.dataset, "val_fraction", DEFAULT_VAL_FRACTION)
                dataset = val_split(dataset, fraction, val=split == "val")
        _check_class_count(dataset, names)
    return dataset


def _source(task: TaskConfig) -> DatasetSource:
    return SOURCES.get(task.dataset.type)


@contextmanager
def _about(task: TaskConfig) -> Iterator[None]:
    """Prefix a source's UserError with the task and its dataset type, so the user knows which task to fix."""
    try:
        yield
    except UserError as error:
        raise UserError(f"task {task.label} ({task.dataset.type}): {error}") from None


def val_split(train: Dataset, val_fraction: float, val: bool) -> Subset:
    """The val part of a train split (or the rest), the same for every run: a fixed permutation, as in
    `held_out_split`."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(VAL_SEED)).tolist()
    n_val = round(len(order) * val_fraction)
    subset = Subset(train, order[:n_val] if val else order[n_val:])
    subset.classes = _dataset_classes(train)  # type: ignore[attr-defined]
    return subset


def mtil_split(root: Path, spec: MtilOptions, train: bool, transform: Transform) -> Dataset:
    """The split through torchvision's class, after checking that the files it reads are where it reads them."""
    source = TORCHVISION[spec.type]
    files = source.files(train)
    for name in files:
        path = root / name
        if not (path.is_dir() if name.endswith("/") else path.is_file()):
            raise UserError(
                f"{path} is missing: torchvision's {source.cls.__name__} reads {', '.join(files)} under {root}, "
                "as its download leaves them extracted (nothing is downloaded)"
            )
    try:
        dataset = source.cls(
            str(root), transform=transform, **({} if source.splits is None else source.splits[0 if train else 1])
        )
    except _UNREADABLE as error:
        where = getattr(error, "filename", None) or f"{root}: {', '.join(files)}"
        raise UserError(
            f"torchvision's {source.cls.__name__} cannot read {where} ({type(error).__name__}: {error}); "
            "are these files the dataset's own, as its download leaves them extracted?"
        ) from None
    if missing := _first_missing_image(dataset):
        raise UserError(f"{missing} is missing: torchvision's {source.cls.__name__} lists it in {root}: {files[-1]}")
    return dataset if source.splits is not None else held_out_split(dataset, spec.test_fraction, train)


def _first_missing_image(dataset: Dataset) -> Path | None:
    """An image a split's list names but the disk lacks (a partial extraction), found now rather than as a
    FileNotFoundError in a data loader hours into training. torchvision keeps the paths under private names."""
    listed = getattr(dataset, "_image_files", None) or getattr(dataset, "_images", None)
    if listed is None:
        listed = [path for path, _ in getattr(dataset, "_samples", ())]
    return next((Path(path) for path in listed if not os.path.isfile(path)), None)


def held_out_split(dataset: Dataset, test_fraction: float, train: bool) -> Subset:
    """A fixed random split for datasets torchvision does not split (Caltech101, EuroSAT, SUN397).

    The MTIL split itself at the default 0.2: `random_split` into int(0.8 n) train and the rest test, seeded 42,
    as ZSCL and the GIFT authors split, so that test accuracies compare with theirs.
    """
    n_train = int((1 - test_fraction) * len(dataset))
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    parts = random_split(dataset, [n_train, len(dataset) - n_train], generator=generator)
    subset = parts[0 if train else 1]
    subset.classes = _dataset_classes(dataset)  # type: ignore[attr-defined]
    return subset


def _dataset_classes(dataset: Dataset) -> Sequence[str] | None:
    """The class list a dataset carries, under whichever name it uses (none for Flowers102)."""
    for name in ("classes", "categories", "classnames"):
        if found := getattr(dataset, name, None):
            return found
    return None


def _check_class_count(dataset: Dataset, names: Sequence[str]) -> None:
    found = _dataset_classes(dataset)
    if found is not None and len(found) != len(names):
        raise UserError(f"{len(names)} class names for a dataset of {len(found)} classes")


def image_folder(folder: Path, transform: Transform) -> Dataset:
    """An ImageFolder tree: one folder per class."""
    try:
        return tv.ImageFolder(str(folder), transform=transform)
    except FileNotFoundError as error:
        raise UserError(str(error)) from None


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
