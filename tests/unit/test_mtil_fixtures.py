"""The eleven MTIL datasets as torchvision reads them (tiny copies): every split loads through the project's loaders
with the classes and label order of the MTIL metadata, and a wrong or missing file is a clear error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gift_common.errors import UserError
from services.testing.mtil_fixtures import label_of, torchvision_names, write_fixtures
from services.trainer import datasets, sources
from services.trainer.config import MTIL_DATASETS, TaskConfig

FLOWERS_IN_MTIL = {"pink-yellow dahlia?": "pink-yellow dahlia"}  # torchvision's list, one name spelt otherwise
OFFICIAL_SPLITS = {name for name, source in datasets.TORCHVISION.items() if source.splits is not None}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixtures(tmp_path_factory.mktemp("mtil"), per_class=1)


def task(name: str, root: Path) -> TaskConfig:
    """As the shipped config mtil_order1 writes a task."""
    return TaskConfig(dataset={"type": name, "root": root})


def load(name: str, root: Path, split: str) -> list[tuple[int, int]]:
    """(label the image encodes, label torchvision gave it) for each image of the split."""
    spec = task(name, root)
    return list(datasets.load_split(spec, datasets.classnames(spec), split, label_of))  # type: ignore[arg-type]


def as_metadata_name(name: str, torchvision_name: str) -> str:
    """torchvision's class name as MTIL writes it (ZSCL's and the GIFT authors' rule: '_' read as ' ')."""
    if name in ("Caltech101", "EuroSAT"):  # folder names, replaced by the authors' descriptions: checked by position
        return torchvision_name
    if name == "Flowers":  # the authors' own list: torchvision's, lower case
        return FLOWERS_IN_MTIL.get(torchvision_name, torchvision_name.lower())
    return torchvision_name.replace("_", " ")


@pytest.mark.parametrize("name", MTIL_DATASETS)
def test_every_split_loads_with_the_metadata_classes_in_label_order(root: Path, name: str) -> None:
    names = sources.mtil_metadata()[name]["classnames"]
    spec = task(name, root)
    assert datasets.classnames(spec) == names
    found = {split: load(name, root, split) for split in ("train", "test")}
    for split, pairs in found.items():
        assert pairs and all(drawn == given for drawn, given in pairs), (split, pairs[:5])
    labels = {split: {given for _, given in pairs} for split, pairs in found.items()}
    if name in OFFICIAL_SPLITS:
        assert labels["train"] == labels["test"] == set(range(len(names)))
    else:  # a held-out part of one set: together they hold every class
        assert labels["train"] | labels["test"] == set(range(len(names)))
    classes = datasets._dataset_classes(datasets.load_split(spec, names, "test", label_of))  # type: ignore[arg-type]
    assert classes is not None and len(classes) == len(names)
    expected = [n for n in torchvision_names(name) if n != "BACKGROUND_Google"]
    if name in ("Caltech101", "EuroSAT"):
        assert list(classes) == sorted(expected)
    else:
        assert [as_metadata_name(name, c) for c in classes] == names


def test_aircraft_trains_on_the_train_list_not_trainval(root: Path) -> None:
    """MTIL's Aircraft task trains on the archive's train list, half of trainval, as ZSCL and GIFT_CL do."""
    data = root / "fgvc-aircraft-2013b" / "data"
    listed = {split: len((data / f"images_variant_{split}.txt").read_text().splitlines()) for split in ("train", "val")}
    listed["trainval"] = listed["train"] + listed["val"]
    assert len(load("Aircraft", root, "train")) == listed["train"] < listed["trainval"]


def test_train_leaves_out_its_val_part_when_asked(root: Path) -> None:
    spec = task("DTD", root)
    names = datasets.classnames(spec)
    val = datasets.load_split(spec, names, "val", label_of, hold_out_val=True)  # type: ignore[arg-type]
    train = datasets.load_split(spec, names, "train", label_of, hold_out_val=True)  # type: ignore[arg-type]
    assert len(val) + len(train) == len(names) and set(val.indices).isdisjoint(train.indices)


def copy_of(root: Path, tmp_path: Path, name: str) -> Path:
    folder = datasets.TORCHVISION[name].train_files[0].split("/")[0]
    shutil.copytree(root / folder, tmp_path / folder)
    return tmp_path


@pytest.mark.parametrize(
    ("name", "remove", "split"),
    [
        ("Food", "food-101/meta/test.json", "test"),
        ("CIFAR100", "cifar-100-python/meta", "train"),
        ("StanfordCars", "stanford_cars/devkit/cars_train_annos.mat", "train"),
        ("OxfordPet", "oxford-iiit-pet/images", "test"),
        ("MNIST", "MNIST/raw/t10k-labels-idx1-ubyte", "train"),
    ],
)
def test_a_missing_file_names_the_dataset_and_the_path(
    root: Path, tmp_path: Path, name: str, remove: str, split: str
) -> None:
    copy = copy_of(root, tmp_path, name)
    target = copy / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(UserError, match=f"task {name} \\({name}\\): {target} is missing: torchvision's .* reads "):
        load(name, copy, split)


@pytest.mark.parametrize(
    ("name", "image"),
    [("Food", "food-101/images/apple_pie/100000.jpg"), ("StanfordCars", "stanford_cars/cars_test/00001.jpg")],
)
def test_a_listed_image_missing_is_named_before_training(root: Path, tmp_path: Path, name: str, image: str) -> None:
    copy = copy_of(root, tmp_path, name)
    (copy / image).unlink()
    with pytest.raises(UserError, match=f"task {name} \\({name}\\): {copy / image} is missing: torchvision's"):
        load(name, copy, "test" if "test" in image else "train")


def test_a_dataset_one_folder_too_deep_names_the_path_torchvision_reads(root: Path, tmp_path: Path) -> None:
    """The common slip: the root points at the dataset's own folder instead of the folder holding it."""
    copy_of(root, tmp_path, "DTD")
    with pytest.raises(UserError, match=f"{tmp_path / 'dtd' / 'dtd' / 'dtd' / 'images'} is missing"):
        load("DTD", tmp_path / "dtd", "train")


@pytest.mark.parametrize(
    ("name", "spoil", "message"),
    [
        ("CIFAR100", "cifar-100-python/meta", "cannot read .*cifar-100-python.*UnpicklingError"),
        ("Flowers", "flowers-102/setid.mat", "cannot read .*flowers-102/setid.mat"),
        ("MNIST", "MNIST/raw/train-images-idx3-ubyte", "cannot read .*MNIST"),
    ],
)
def test_a_file_of_another_layout_is_a_clear_error(
    root: Path, tmp_path: Path, name: str, spoil: str, message: str
) -> None:
    copy = copy_of(root, tmp_path, name)
    (copy / spoil).write_bytes(b"not the dataset's file")
    with pytest.raises(UserError, match=f"task {name} \\({name}\\): torchvision's .*{message}"):
        load(name, copy, "train")


def test_a_list_naming_an_unknown_class_is_a_clear_error(root: Path, tmp_path: Path) -> None:
    copy = copy_of(root, tmp_path, "Aircraft")
    listed = copy / "fgvc-aircraft-2013b" / "data" / "images_variant_test.txt"
    listed.write_text(listed.read_text() + "1999999 Concorde\n")
    with pytest.raises(
        UserError, match=r"task Aircraft \(Aircraft\): torchvision's FGVCAircraft cannot read .*Concorde"
    ):
        load("Aircraft", copy, "test")
