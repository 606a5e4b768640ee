"""The run configuration of `gift train --config FILE`: YAML checked by pydantic, every setting and default here.

Relative paths are relative to the config file's folder, so a config works from any working directory. Every error
names the key path and the rule it breaks, e.g. `tasks[1].lr: input should be greater than 0 (got -1)`, in one line.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gift_common.errors import UserError
from services.trainer.context import TeacherMode
from services.trainer.methods import PRESETS, MethodSettings
from tinyworld.tasks import TASKS as TINYWORLD_TASKS

MTIL_DATASETS = (
    "Aircraft",
    "Caltech101",
    "CIFAR100",
    "DTD",
    "EuroSAT",
    "Flowers",
    "Food",
    "MNIST",
    "OxfordPet",
    "StanfordCars",
    "SUN397",
)
DatasetType = Literal[(*MTIL_DATASETS, "imagefolder", "csv", "tinyworld")]  # type: ignore[valid-type]
PresetName = Literal[tuple(PRESETS)]  # type: ignore[valid-type]
DEFAULT_TEMPLATE = "a photo of a {}."
TINYWORLD_TEMPLATE = "a photo of {}."  # the world's concept names carry their article: "a circle", "grass"


def _relative_to_config(path: Path, info: ValidationInfo) -> Path:
    path = path.expanduser()
    base = (info.context or {}).get("base")
    return path if path.is_absolute() or base is None else base / path


ConfigPath = Annotated[Path, AfterValidator(_relative_to_config)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def _check_template(template: str) -> str:
    try:
        filled = template.format("\0")
    except (IndexError, KeyError, ValueError):
        filled = ""
    if template.count("{}") != 1 or filled.count("\0") != 1:
        raise ValueError("a template needs exactly one '{}' where the class name goes, and no other braces")
    return template


Template = Annotated[str, AfterValidator(_check_template)]


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Strict):
    architecture: str = Field(description="an open_clip model name, or the path of an open_clip JSON architecture")
    pretrained: ConfigPath | None = Field(default=None, description="a local weights file; None = random weights")

    @field_validator("architecture")
    @classmethod
    def _json_paths_relative_to_config(cls, value: str, info: ValidationInfo) -> str:
        return str(_relative_to_config(Path(value), info)) if value.endswith(".json") else value


class MethodConfig(Strict):
    preset: PresetName = "gift"
    teacher: TeacherMode = Field(default="cached", description="teacher embeddings cached per task, or per step")
    overrides: dict[str, Any] = Field(default_factory=dict, description="MethodSettings fields, e.g. {ita: 0.5}")

    @field_validator("overrides")
    @classmethod
    def _overrides_are_settings(cls, overrides: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "preset" in info.data:  # else the preset is wrong, and that error is the one to read
            method_settings(info.data["preset"], overrides)
        return overrides

    def settings(self) -> MethodSettings:
        return method_settings(self.preset, self.overrides)


def method_settings(preset: str, overrides: dict[str, Any]) -> MethodSettings:
    """The preset with the overrides applied, each checked against its MethodSettings type."""
    known = asdict(PRESETS[preset])
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"unknown setting {', '.join(unknown)}; known: {', '.join(known)}")
    try:
        return TypeAdapter(MethodSettings).validate_python(known | overrides)
    except ValidationError as error:
        raise ValueError(format_errors(error)) from None


class TrainingConfig(Strict):
    """What every task uses unless the task sets its own value (METHOD.md's optimiser settings)."""

    lr: Positive = 1e-5
    iterations: int = Field(default=1000, ge=1)
    warmup: int = Field(default=100, ge=0)
    batch_size: int = Field(default=64, ge=1)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    num_workers: int = Field(default=4, ge=0, description="data loader processes per training process")


class DatasetConfig(Strict):
    """An MTIL dataset through torchvision, an ImageFolder (root/train, root/test), CSVs (root/{train,test}.csv), or
    a task of the embedded tiny world (`task`, no root: its splits are drawn, with native val splits)."""

    type: DatasetType
    root: ConfigPath | None = Field(default=None, validate_default=True, description="every type but tinyworld")
    task: str | None = Field(default=None, validate_default=True, description="tinyworld only: a task name")
    seed: int = Field(default=0, ge=0, description="tinyworld only: the seed its splits are drawn from")
    test_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="held out for testing where torchvision has no split (Caltech101, ...)"
    )
    val_fraction: float = Field(
        default=0.1, gt=0, lt=1, description="of train: the val split, not trained on when evaluating on val"
    )

    @field_validator("root")
    @classmethod
    def _root_unless_tinyworld(cls, root: Path | None, info: ValidationInfo) -> Path | None:
        kind = info.data.get("type")
        if kind == "tinyworld" and root is not None:
            raise ValueError("not used by dataset type tinyworld (its images are drawn, not read)")
        if kind not in (None, "tinyworld") and root is None:
            raise ValueError(f"required for dataset type {kind}")
        return root

    @field_validator("task")
    @classmethod
    def _tinyworld_task(cls, task: str | None, info: ValidationInfo) -> str | None:
        kind, known = info.data.get("type"), ", ".join(TINYWORLD_TASKS)
        if kind == "tinyworld" and task is None:
            raise ValueError(f"required for dataset type tinyworld: one of {known}")
        if kind == "tinyworld" and task not in TINYWORLD_TASKS:
            raise ValueError(f"unknown tinyworld task; known: {known}")
        if kind not in (None, "tinyworld") and task is not None:
            raise ValueError("only for dataset type tinyworld")
        return task


class TaskConfig(Strict):
    name: str | None = Field(default=None, min_length=1, description="default: the dataset type or folder name")
    dataset: DatasetConfig
    classnames: list[str] | None = Field(default=None, min_length=2, description="in label order; default: dataset's")
    templates: list[Template] | None = Field(default=None, min_length=1, description="[0] trains; all evaluate")
    lr: Positive | None = None
    iterations: int | None = Field(default=None, ge=1)
    warmup: int | None = Field(default=None, ge=0)
    batch_size: int | None = Field(default=None, ge=1)

    @property
    def label(self) -> str:
        """The task's name in logs, tables and checkpoints."""
        if self.name is not None:
            return self.name
        if self.dataset.root is None:  # tinyworld
            return str(self.dataset.task)
        return self.dataset.root.name if self.dataset.type in ("imagefolder", "csv") else self.dataset.type


class SyntheticConfig(Strict):
    """The synthetic set S_t of every task (METHOD.md) and how the generator makes it."""

    size: int = Field(default=1000, ge=1, description="pairs per task")
    source: Literal["generator", "tinyworld"] = Field(
        default="generator", description="images from the generator, or real world images (the replay baseline)"
    )
    concepts: str = Field(
        default="imagenet", description="'imagenet', 'tinyworld' (the world's concepts) or a file of one per line"
    )
    concept_template: Template = Field(
        default=DEFAULT_TEMPLATE, description=f"default {TINYWORLD_TEMPLATE!r} for concepts tinyworld"
    )
    model: str | None = Field(default=None, description="a generator model name; None = the server's default")
    steps: int = Field(default=25, ge=1, le=200)
    guidance: float = Field(default=7.5, ge=0, le=30)
    height: int | None = Field(default=None, ge=8, le=2048, multiple_of=8)
    width: int | None = Field(default=None, ge=8, le=2048, multiple_of=8)
    negative_prompt: str | None = None
    seed: int = Field(default=0, ge=0)
    generator_url: str | None = Field(default=None, description="None = GIFT_GENERATOR_URL")
    timeout: Positive | None = Field(default=None, description="seconds to wait for one set; None = no limit")
    cache_dir: ConfigPath | None = Field(default=None, description="None = $GIFT_HOME/synthetic")

    @model_validator(mode="before")
    @classmethod
    def _tinyworld_template(cls, data: Any) -> Any:
        """World concept names carry their own article, so "a photo of a {}." would double it."""
        if isinstance(data, dict) and data.get("concepts") == "tinyworld" and "concept_template" not in data:
            return {**data, "concept_template": TINYWORLD_TEMPLATE}
        return data

    @field_validator("concepts")
    @classmethod
    def _concept_file_relative_to_config(cls, value: str, info: ValidationInfo) -> str:
        return value if value in ("imagenet", "tinyworld") else str(_relative_to_config(Path(value), info))


class EvaluationConfig(Strict):
    """Which split the matrix is measured on (choose settings on val, report on test), and the pre-training probe."""

    split: Literal["test", "val"] = "test"
    pretraining_probe: Literal["none", "tinyworld"] = Field(
        default="none", description="tinyworld: zero-shot accuracy on held-out world images per concept family"
    )
    probe_size: int = Field(default=2000, ge=1, description="held-out world images the probe draws")
    batch_size: int = Field(default=256, ge=1)
    num_workers: int = Field(default=4, ge=0)


class RunConfig(Strict):
    output_dir: ConfigPath
    model: ModelConfig
    tasks: list[TaskConfig] = Field(min_length=1)
    method: MethodConfig = MethodConfig()
    training: TrainingConfig = TrainingConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    checkpoint_every: int = Field(default=200, ge=1, description="iterations; a checkpoint also follows each task")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    seed: int = Field(default=0, ge=0)
    progress: bool = True

    @field_validator("tasks")
    @classmethod
    def _unique_names(cls, tasks: list[TaskConfig]) -> list[TaskConfig]:
        labels = [task.label for task in tasks]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"task names must be unique; repeated: {', '.join(repeated)} (set 'name')")
        return tasks

    def schedule(self, task: TaskConfig) -> dict[str, Any]:
        """The task's lr, iterations, warm-up and batch size: its own where set, else the training defaults."""
        keys = ("lr", "iterations", "warmup", "batch_size")
        return {key: getattr(self.training, key) if getattr(task, key) is None else getattr(task, key) for key in keys}


def load_config(path: Path) -> RunConfig:
    """Read and check a YAML run config; any problem is a UserError that names the file, the key and the rule."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise UserError(f"cannot read config {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    return parse_config(data, base=path.resolve().parent, source=str(path))


def parse_config(data: Any, base: Path, source: str = "config") -> RunConfig:
    if not isinstance(data, dict):
        raise UserError(f"{source}: the config must be a mapping of keys to values, not {type(data).__name__}")
    try:
        return RunConfig.model_validate(data, context={"base": base})
    except ValidationError as error:
        raise UserError(f"{source}: {format_errors(error)}") from None


def format_errors(error: ValidationError) -> str:
    """`key.path: rule (got value)` for each error, joined into one line."""
    return "; ".join(_format_one(item) for item in error.errors(include_url=False))


_PLAIN_WORDS = {
    "extra_forbidden": "unknown key",
    "missing": "required key missing",
}


def _format_one(item: dict[str, Any]) -> str:
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in item["loc"]).lstrip(".")
    message = _PLAIN_WORDS.get(item["type"], str(item["msg"]).removeprefix("Value error, "))
    message = message[0].lower() + message[1:]
    shown = item["type"] not in _PLAIN_WORDS and not isinstance(item.get("input"), dict | list | None)
    got = f" (got {item['input']!r})" if shown and "input" in item else ""
    return f"{path or 'config'}: {message}{got}"
