"""Task datasets from local files: CSV lists, ImageFolder trees, torchvision's MTIL classes, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gift_common.errors import UserError
from services.trainer import datasets, registries, sources, synthetic
from services.trainer.config import MTIL_DATASETS, TaskConfig


def transform(image: Image.Image) -> torch.Tensor:
    """A stand-in for the model's preprocessing: RGB 8×8 as a float tensor."""
    return torch.from_numpy(np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32)).permute(2, 0, 1)


def save_image(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), color).save(path)


def task(type_: str, root: Path, test_fraction: float = 0.2, **fields) -> TaskConfig:
    split = {"test_fraction": test_fraction} if type_ in MTIL_DATASETS else {}
    return TaskConfig(dataset={"type": type_, "root": root, **split}, **fields)


def test_mtil_class_names_and_templates_ship_with_the_package() -> None:
    sizes = {"Aircraft": 100, "Caltech101": 101, "CIFAR100": 100, "DTD": 47, "EuroSAT": 10, "Flowers": 102,
             "Food": 101, "MNIST": 10, "OxfordPet": 37, "StanfordCars": 196, "SUN397": 397}  # fmt: skip
    metadata = sources.mtil_metadata()
    assert set(metadata) == set(MTIL_DATASETS) and tuple(datasets.TORCHVISION) == MTIL_DATASETS  # read, in order
    for name, size in sizes.items():
        assert len(metadata[name]["classnames"]) == len(set(metadata[name]["classnames"])) == size, name
        assert all(template.count("{}") == 1 for template in metadata[name]["templates"]), name


def test_mtil_evaluates_with_every_template_of_the_benchmark() -> None:
    """ZSCL's and GIFT_CL's template lists (their counts), each first template the one that trains."""
    counts = {"Aircraft": 2, "Caltech101": 34, "CIFAR100": 18, "DTD": 8, "EuroSAT": 3, "Flowers": 1, "Food": 1,
              "MNIST": 1, "OxfordPet": 1, "StanfordCars": 9, "SUN397": 2}  # fmt: skip
    firsts = {"EuroSAT": "a centered satellite photo of {}.", "MNIST": 'a photo of the number: "{}".',
              "StanfordCars": "a photo of a {}, a type of car.", "DTD": "a photo of a {} texture."}  # fmt: skip
    metadata = sources.mtil_metadata()
    for name, count in counts.items():
        templates = metadata[name]["templates"]
        assert len(templates) == len(set(templates)) == count, name
        assert templates[0] == firsts.get(name, templates[0]), name


def test_mtil_class_names_are_the_benchmark_s() -> None:
    """The names ZSCL and GIFT_CL train and evaluate with where CLIP's own lists spell them otherwise."""
    metadata = sources.mtil_metadata()
    assert metadata["MNIST"]["classnames"][:2] == ["0 - zero", "1 - one"]  # torchvision's MNIST classes
    assert "apartment building/outdoor" in metadata["SUN397"]["classnames"]  # torchvision's, '_' read as ' '
    flowers = metadata["Flowers"]["classnames"]
    assert (flowers[15], flowers[59], flowers[92]) == ("globe-flower", "pink-yellow dahlia", "ball moss")
    imagenet = registries.imagenet_classnames()
    assert len(imagenet) == 1000 and imagenet[:2] == ["tench", "goldfish"]


def test_csv_with_index_and_name_labels(tmp_path: Path) -> None:
    save_image(tmp_path / "img" / "a.png", (255, 0, 0))
    save_image(tmp_path / "img" / "b.png", (0, 0, 255))
    (tmp_path / "train.csv").write_text("path,label\nimg/a.png,0\nimg/b.png,dog\n")
    spec = task("csv", tmp_path, classnames=["cat", "dog"])
    data = datasets.load_split(spec, datasets.classnames(spec), "train", transform)
    assert len(data) == 2
    (image, label), (_, second) = data[0], data[1]
    assert image.shape == (3, 8, 8) and image[0].mean() == 255 and (label, second) == (0, 1)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("file,label\nimg/a.png,0\n", "must name the columns 'path' and 'label'"),
        ("path,label\nimg/none.png,0\n", "line 2: image .*none.png does not exist"),
        ("path,label\nimg/a.png,2\n", "line 2: label '2' is neither a class index below 2 nor a class name"),
        ("path,label\n", "lists no image"),
    ],
)
def test_csv_mistakes_name_the_file_and_line(tmp_path: Path, rows: str, message: str) -> None:
    save_image(tmp_path / "img" / "a.png", (255, 0, 0))
    (tmp_path / "test.csv").write_text(rows)
    with pytest.raises(UserError, match=message):
        datasets.load_split(task("csv", tmp_path), ["cat", "dog"], "test", transform)


def test_csv_needs_class_names(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="a CSV dataset needs 'classnames'"):
        datasets.classnames(task("csv", tmp_path))


def test_imagefolder_takes_class_names_from_its_folders(tmp_path: Path) -> None:
    for split in ("train", "test"):
        save_image(tmp_path / "pets" / split / "golden_retriever" / "1.png", (200, 160, 0))
        save_image(tmp_path / "pets" / split / "tabby" / "1.png", (90, 90, 90))
    spec = task("imagefolder", tmp_path / "pets")
    names = datasets.classnames(spec)
    assert names == ["golden retriever", "tabby"] and datasets.templates(spec) == ["a photo of a {}."]
    test = datasets.load_split(spec, names, "test", transform)
    assert [label for _, label in test] == [0, 1]
    with pytest.raises(UserError, match="3 class names for a dataset of 2 classes"):
        datasets.load_split(spec, [*names, "parrot"], "train", transform)


@pytest.mark.parametrize("type_", ["CIFAR100", "imagefolder", "csv"])
def test_a_missing_root_names_the_task_and_the_path(tmp_path: Path, type_: str) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match=f"task (CIFAR100|nowhere) \\({type_}\\): {missing} does not exist"):
        datasets.load_split(task(type_, missing), ["a", "b"], "train", transform)


def test_a_root_without_the_data_says_where_torchvision_looks(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=f"{tmp_path / 'food-101' / 'images'} is missing.*nothing is downloaded"):
        datasets.load_split(task("Food", tmp_path), datasets.classnames(task("Food", tmp_path)), "train", transform)


@pytest.mark.parametrize("images", [50, 51])
def test_datasets_without_an_official_split_get_the_mtil_held_out_part(tmp_path: Path, images: int) -> None:
    """EuroSAT is an ImageFolder under eurosat/2750 for torchvision: a small fake one is enough. The split is
    ZSCL's and GIFT_CL's: int(0.8 n) images train, the rest test, by `random_split` seeded 42."""
    folders = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
               "Residential", "River", "SeaLake"]  # fmt: skip
    for k in range(images):
        i, j = divmod(k, 5) if k < 50 else (0, k - 45)
        save_image(tmp_path / "eurosat" / "2750" / folders[i] / f"{j}.jpg", (20 * i, 10 * j, 0))
    spec = task("EuroSAT", tmp_path, test_fraction=0.2)
    names = datasets.classnames(spec)
    assert names[0] == "annual crop land"
    train, test = (datasets.load_split(spec, names, split, transform) for split in ("train", "test"))
    again = datasets.load_split(spec, names, "test", transform)
    assert (len(train), len(test)) == (40, images - 40)
    assert set(train.indices).isdisjoint(test.indices) and test.indices == again.indices
    theirs = torch.utils.data.random_split(range(images), [40, images - 40], torch.Generator().manual_seed(42))
    assert (train.indices, test.indices) == (list(theirs[0]), list(theirs[1]))


def test_concepts_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "concepts.txt").write_text("tree\n\n  red car \n")
    assert synthetic.concept_names(str(tmp_path / "concepts.txt")) == ["tree", "red car"]
    with pytest.raises(UserError, match="is not a file"):
        synthetic.concept_names(str(tmp_path / "none.txt"))
