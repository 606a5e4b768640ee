"""The dataset sources a run config names (`dataset: {type: NAME, ...}`), apart from reading their files: a config is
checked against their options without importing torch or torchvision, which datasets.py loads when a run reads the
data. The eleven MTIL datasets, ImageFolder trees and CSV lists are built in; plugins add theirs (`gift.datasets`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from gift_common.errors import UserError
from gift_common.plugins import Registry
from services.trainer.fields import ConfigPath, Strict

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from services.trainer.plugins import DatasetSource, Split, Transform

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_VAL_FRACTION = 0.1


@cache
def mtil_metadata() -> dict[str, dict[str, list[str]]]:
    """Class names (torchvision's label order) and templates of each MTIL dataset."""
    return {k: v for k, v in json.loads((DATA_DIR / "mtil.json").read_text()).items() if not k.startswith("_")}


MTIL_DATASETS = tuple(mtil_metadata())  # MTIL's Order I


def _existing(path: Path) -> Path:
    if not path.exists():
        raise UserError(f"{path} does not exist")
    return path


# --- the built-in sources -------------------------------------------------------------------------------------


class LocalFiles(Strict):
    """Options of the sources that read a local root and take val from train."""

    root: ConfigPath
    val_fraction: float = Field(
        default=DEFAULT_VAL_FRACTION, gt=0, lt=1, description="of train: the val split, not trained on when on val"
    )


class MtilOptions(LocalFiles):
    type: Literal[MTIL_DATASETS]  # type: ignore[valid-type]
    test_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="held out for testing where torchvision has no split (Caltech101, ...)"
    )


class ImageFolderOptions(LocalFiles):
    """root/train and root/test, one folder per class."""

    type: Literal["imagefolder"]


class CsvOptions(LocalFiles):
    """root/train.csv and root/test.csv listing `path,label`."""

    type: Literal["csv"]


@dataclass(frozen=True)
class Mtil:
    """An MTIL dataset through its torchvision class, from a root laid out as torchvision's download leaves it."""

    options: type[MtilOptions] = MtilOptions
    has_val: bool = False

    def label(self, options: MtilOptions) -> str:
        return options.type

    def classnames(self, options: MtilOptions) -> list[str]:
        return mtil_metadata()[options.type]["classnames"]

    def templates(self, options: MtilOptions) -> list[str]:
        return mtil_metadata()[options.type]["templates"]

    def load(self, options: MtilOptions, split: Split, transform: Transform, classnames: Sequence[str]) -> Dataset:
        from services.trainer.datasets import mtil_split  # torchvision, loaded when a run reads the data

        return mtil_split(_existing(options.root), options, split != "test", transform)


@dataclass(frozen=True)
class ImageFolderSource:
    options: type[ImageFolderOptions] = ImageFolderOptions
    has_val: bool = False

    def label(self, options: ImageFolderOptions) -> str:
        return options.root.name

    def classnames(self, options: ImageFolderOptions) -> list[str]:
        folders = sorted(_existing(_existing(options.root) / "train").iterdir(), key=lambda p: p.name)
        return [entry.name.replace("_", " ") for entry in folders if entry.is_dir()]

    def templates(self, options: ImageFolderOptions) -> None:
        return None

    def load(
        self, options: ImageFolderOptions, split: Split, transform: Transform, classnames: Sequence[str]
    ) -> Dataset:
        from services.trainer.datasets import image_folder

        return image_folder(_existing(_existing(options.root) / ("test" if split == "test" else "train")), transform)


@dataclass(frozen=True)
class CsvSource:
    options: type[CsvOptions] = CsvOptions
    has_val: bool = False

    def label(self, options: CsvOptions) -> str:
        return options.root.name

    def classnames(self, options: CsvOptions) -> list[str]:
        raise UserError("a CSV dataset needs 'classnames' (label i names classnames[i])")

    def templates(self, options: CsvOptions) -> None:
        return None

    def load(self, options: CsvOptions, split: Split, transform: Transform, classnames: Sequence[str]) -> Dataset:
        from services.trainer.datasets import CsvImages

        return CsvImages(_existing(_existing(options.root) / f"{split}.csv"), classnames, transform)


SOURCES: Registry[DatasetSource] = Registry(
    "gift.datasets",
    "dataset type",
    {**dict.fromkeys(MTIL_DATASETS, Mtil()), "imagefolder": ImageFolderSource(), "csv": CsvSource()},
)
