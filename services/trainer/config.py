"""The run configuration of `gift train --config FILE`: YAML checked by pydantic, every setting and default here.

Relative paths are relative to the config file's folder, so a config works from any working directory; a shipped
config taken by name (`gift train --config tinyworld`) reads them against the current directory, as if it had been
copied there. A config may extend another and take `--set` overrides (compose.py). Every error names the key path
and the rule it breaks, e.g. `tasks[1].lr: input should be greater than 0 (got -1)`, in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    SerializeAsAny,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gift_common.errors import UserError
from services.trainer.compose import compose
from services.trainer.fields import (
    DEFAULT_TEMPLATE,
    ConfigPath,
    Positive,
    PrecisionName,
    Strict,
    TeacherMode,
    Template,
    relative_to_config,
)
from services.trainer.registries import CONCEPTS, METHODS, PROBES, REPLAY_SOURCES, SHIPPED_MODELS
from services.trainer.sources import MTIL_DATASETS, SOURCES

__all__ = ["MTIL_DATASETS", "RunConfig", "TaskConfig", "load_config", "parse_config", "resolved_yaml"]


class ModelConfig(Strict):
    architecture: str = Field(description="an open_clip model name, or the path of an open_clip JSON architecture")
    pretrained: ConfigPath | None = Field(default=None, description="a local weights file; None = random weights")

    @model_validator(mode="before")
    @classmethod
    def _shipped_model_files(cls, data: Any) -> Any:
        """`shipped: NAME` stands for the architecture and the weights a plugin installed, wherever it lies."""
        if not isinstance(data, dict) or "shipped" not in data:
            return data
        if set(data) != {"shipped"}:
            raise ValueError("shipped names the architecture and the weights: give no other key beside it")
        architecture, weights = SHIPPED_MODELS.get(str(data["shipped"]))()
        return {"architecture": str(architecture), "pretrained": str(weights)}

    @field_validator("architecture")
    @classmethod
    def _json_paths_relative_to_config(cls, value: str, info: ValidationInfo) -> str:
        return str(relative_to_config(Path(value), info)) if value.endswith(".json") else value


class MethodConfig(Strict):
    preset: str = Field(
        default="gift", description="the method: a built-in preset of term weights (below), or a plugin's method"
    )
    teacher: TeacherMode = Field(default="cached", description="teacher embeddings cached per task, or per step")
    overrides: dict[str, Any] = Field(default_factory=dict, description="preset settings to change, e.g. {ita: 0.5}")

    @field_validator("preset")
    @classmethod
    def _registered_method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"unknown method {value!r}; registered: {', '.join(METHODS.names())}")
        return value

    @field_validator("overrides")
    @classmethod
    def _overrides_are_settings(cls, overrides: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "preset" in info.data:  # else the preset is wrong, and that error is the one to read
            method_settings(info.data["preset"], overrides)
        return overrides

    def settings(self) -> Any:
        return method_settings(self.preset, self.overrides)


def method_settings(method: str, overrides: dict[str, Any]) -> Any:
    """The method's settings with the overrides applied, each checked against its field's type (for the presets,
    MethodSettings)."""
    defaults = METHODS.get(method).defaults
    known = asdict(defaults)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"unknown setting {', '.join(unknown)}; known: {', '.join(known)}")
    try:
        return TypeAdapter(type(defaults)).validate_python(known | overrides)
    except ValidationError as error:
        raise ValueError(format_errors(error)) from None


class TrainingConfig(Strict):
    """What every task uses unless the task sets its own value (METHOD.md's optimiser settings)."""

    lr: Positive = Field(default=1e-5, description="AdamW's peak learning rate")
    iterations: int = Field(default=1000, ge=1, description="training steps per task")
    warmup: int = Field(default=100, ge=0, description="linear warm-up steps, then cosine decay, per task")
    batch_size: int = Field(default=64, ge=1, description="task images per step (the replay batch as large)")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW's decoupled weight decay")
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="AdamW's moment decay rates")
    num_workers: int = Field(default=4, ge=0, description="data loader processes per training process")
    precision: PrecisionName = Field(
        default="fp32", description="forward passes under autocast in bf16 or fp16 (CUDA only); weights stay fp32"
    )
    grad_checkpointing: bool = Field(
        default=False,
        description="recompute each transformer block in the backward pass instead of keeping its activations: "
        "the task loss encodes every class prompt with gradients (397 for SUN397), so memory grows with the classes",
    )


class TaskConfig(Strict):
    name: str | None = Field(default=None, min_length=1, description="default: the dataset type or folder name")
    dataset: SerializeAsAny[BaseModel] = Field(description="{type: a registered dataset type, ...its options}")
    classnames: list[str] | None = Field(default=None, min_length=2, description="in label order; default: dataset's")
    templates: list[Template] | None = Field(
        default=None, min_length=1, description="prompts with one {} for the class: [0] trains, all evaluate"
    )
    lr: Positive | None = Field(default=None, description="this task's; None = training.lr")
    iterations: int | None = Field(default=None, ge=1, description="this task's; None = training.iterations")
    warmup: int | None = Field(default=None, ge=0, description="this task's; None = training.warmup")
    batch_size: int | None = Field(default=None, ge=1, description="this task's; None = training.batch_size")

    @field_validator("dataset", mode="before")
    @classmethod
    def _registered_source(cls, value: Any, info: ValidationInfo) -> BaseModel:
        """The options of the source the `type` names, checked by that source's own model."""
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, dict) or "type" not in value:
            raise ValueError(f"a mapping with a 'type', one of: {', '.join(SOURCES.names())}")
        try:
            source = SOURCES.get(str(value["type"]))
        except ValueError as error:
            raise ValueError(f"type: {error}") from None
        try:
            return source.options.model_validate(value, context=info.context)
        except ValidationError as error:
            raise ValueError(format_errors(error)) from None

    @property
    def label(self) -> str:
        """The task's name in logs, tables and checkpoints."""
        return self.name if self.name is not None else SOURCES.get(self.dataset.type).label(self.dataset)


class FilterConfig(Strict):
    """The pairs of each set that replay: those the task's teacher (the model the task starts from) gives the highest
    probability for their own prompt among the prompt pool P_t (METHOD.md); one rule, a share or a probability."""

    keep: float | None = Field(
        default=None, gt=0, le=1, description="the share of each set kept, its most confident pairs (e.g. 0.5)"
    )
    threshold: float | None = Field(
        default=None, gt=0, lt=1, description="keep the pairs whose own prompt has at least this probability"
    )

    @model_validator(mode="after")
    def _one_rule(self) -> FilterConfig:
        if (self.keep is None) == (self.threshold is None):
            which = "not both" if self.keep is not None else "one of them"
            raise ValueError(f"give keep (a share of the pairs, e.g. 0.5) or threshold (the least probability of a "
                             f"pair's own prompt, e.g. 0.3), {which}")  # fmt: skip
        return self

    def count(self, pairs: int) -> int | None:
        """How many of a set's `pairs` the keep rule keeps; None under a threshold (it depends on the teacher)."""
        return None if self.keep is None else max(1, round(self.keep * pairs))


class AdaptConfig(Strict):
    """An adapter of the generator for each task (METHOD.md, "Adapted replay"): after task t, the generator trains a
    LoRA of its model on task t's training images, and later tasks replay task t's classes with it."""

    select: Literal["confident", "all"] = Field(
        default="confident",
        description="confident: each class's images the model just trained classifies most confidently (LoRA-Loop); "
        "all: every training image",
    )
    fraction: float | None = Field(
        default=None, gt=0, le=1, description="confident: the share of each class's images kept; None = 0.5"
    )
    max_images: int = Field(default=500, ge=1, description="the most images one adapter learns from, every class kept")
    steps: int = Field(default=200, ge=1, description="the adapter's training steps")
    rank: int = Field(default=4, ge=1, description="the LoRA's rank")
    learning_rate: float = Field(default=1e-4, gt=0, description="the adapter's learning rate")
    scale: float = Field(default=1.0, ge=-4, le=4, description="the adapter's weight when replaying with it")
    timeout: Positive | None = Field(default=None, description="seconds to wait for one adapter; None = no limit")

    @model_validator(mode="after")
    def _fraction_of_confident(self) -> AdaptConfig:
        if self.select == "all" and self.fraction is not None:
            raise ValueError("fraction chooses among confident images: leave it out with select: all, or set select: "
                             "confident")  # fmt: skip
        return self

    @property
    def share(self) -> float:
        """The share of each class's images kept: every one under `all`."""
        return 1.0 if self.select == "all" else 0.5 if self.fraction is None else self.fraction


class SyntheticConfig(Strict):
    """The synthetic set S_t of every task (METHOD.md) and how the generator makes it."""

    size: int = Field(default=1000, ge=1, description="pairs per task")
    source: str = Field(
        default="generator", description="where replay images come from: the generator, or a registered source"
    )
    concepts: str = Field(default="imagenet", description="a registered concept list, or a file of one per line")
    concept_template: Template = Field(default=DEFAULT_TEMPLATE, description="default: the concept list's own")
    model: str | None = Field(default=None, description="a generator model name; None = the server's default")
    steps: int = Field(default=25, ge=1, le=200, description="the sampler's denoising steps per image")
    scheduler: Literal["directory", "dpmsolver++"] | None = Field(
        default=None,
        description="directory: the sampler the model's directory names (SD v1.5: PNDM); dpmsolver++: DPM-Solver++ "
        "(2M), fewer steps; None = the generator worker's GIFT_SCHEDULER",
    )
    guidance: float = Field(default=7.5, ge=0, le=30, description="classifier-free guidance scale")
    height: int | None = Field(default=None, ge=8, le=2048, multiple_of=8, description="None = the model's own")
    width: int | None = Field(default=None, ge=8, le=2048, multiple_of=8, description="None = the model's own")
    negative_prompt: str | None = Field(default=None, description="sent with every prompt of the set")
    seed: int = Field(default=0, ge=0, description="draws the prompts and seeds the images; tasks never share one")
    generator_url: str | None = Field(default=None, description="None = GIFT_GENERATOR_URL")
    timeout: Positive | None = Field(default=None, description="seconds to wait for one set; None = no limit")
    cache_dir: ConfigPath | None = Field(default=None, description="None = $GIFT_HOME/synthetic")
    filter: FilterConfig | None = Field(
        default=None, description="replay only the pairs the teacher recognises best (below); None = every pair"
    )
    adapt: AdaptConfig | None = Field(
        default=None, description="replay each task's classes with an adapter of the generator (below); None = off"
    )

    @model_validator(mode="before")
    @classmethod
    def _concept_list_template(cls, data: Any) -> Any:
        """A concept list may word its names its own way (with their article, say), so it brings its template."""
        if isinstance(data, dict) and "concept_template" not in data:
            listed = data.get("concepts", "imagenet")
            if listed in CONCEPTS:
                return {**data, "concept_template": CONCEPTS.get(listed).template}
        return data

    @field_validator("concepts")
    @classmethod
    def _concept_file_relative_to_config(cls, value: str, info: ValidationInfo) -> str:
        return value if value in CONCEPTS else str(relative_to_config(Path(value), info))

    @field_validator("source")
    @classmethod
    def _registered_replay_source(cls, value: str) -> str:
        if value not in REPLAY_SOURCES:
            raise ValueError(f"unknown replay source {value!r}; registered: {', '.join(REPLAY_SOURCES.names())}")
        return value

    @model_validator(mode="after")
    def _adapt_needs_the_generator(self) -> SyntheticConfig:
        if self.adapt is not None and self.source != "generator":
            raise ValueError(f"adapt trains adapters of the generator; the replay source {self.source!r} makes no "
                             "images: set source: generator, or leave adapt out")  # fmt: skip
        return self


class EvaluationConfig(Strict):
    """Which split the matrix is measured on (choose settings on val, report on test), and the pre-training probe."""

    split: Literal["test", "val"] = Field(default="test", description="val to choose settings, test to report")
    templates: Literal["all", "first"] = Field(
        default="all",
        description="all: the mean over every template of the task, as MTIL evaluates; first: the training template "
        "alone, a cheaper classifier for rehearsals whose accuracies are not the benchmark's",
    )
    pretraining_probe: str = Field(
        default="none", description="a registered probe of what the model keeps of pre-training, or none"
    )
    probe_size: int = Field(default=2000, ge=1, description="held-out world images the probe draws")
    batch_size: int = Field(default=256, ge=1, description="images per evaluation batch")
    num_workers: int = Field(default=4, ge=0, description="data loader processes")

    def evaluated_templates(self, templates: list[Template]) -> list[Template]:
        """The templates a task's classifier averages over; training always uses the first."""
        return templates if self.templates == "all" else templates[:1]

    @field_validator("pretraining_probe")
    @classmethod
    def _registered_probe(cls, value: str) -> str:
        if value != "none" and value not in PROBES:
            raise ValueError(f"unknown probe {value!r}; registered: {', '.join(['none', *PROBES.names()])}")
        return value


class WandbConfig(Strict):
    """Weights & Biases, beside the TensorBoard files: the same scalars and pictures."""

    mode: Literal["off", "offline", "online"] = Field(
        default="off",
        description="offline: a run folder in OUTPUT_DIR/wandb, no network (`wandb sync` it later); online: live, "
        "after `wandb login` (or WANDB_API_KEY)",
    )
    project: str = Field(default="gift", min_length=1, description="the W&B project")
    entity: str | None = Field(default=None, description="the W&B user or team; None = the login's default")


class RunConfig(Strict):
    output_dir: ConfigPath = Field(description="the checkpoint, metrics.json, results.md and figures go here")
    model: ModelConfig = Field(description="the CLIP model fine-tuned")
    tasks: list[TaskConfig] = Field(min_length=1, description="the sequence, trained in this order")
    method: MethodConfig = MethodConfig()
    training: TrainingConfig = TrainingConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    checkpoint_every: int = Field(default=200, ge=1, description="iterations; a checkpoint also follows each task")
    device: str = Field(
        default="auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="auto = CUDA if there is one, else CPU"
    )
    seed: int = Field(default=0, ge=0, description="random initial weights and the order of every batch stream")
    progress: bool = Field(default=True, description="progress bars (from one process under torchrun)")
    tensorboard: bool = Field(
        default=True, description="TensorBoard event files in OUTPUT_DIR/tensorboard (tensorboard --logdir OUTPUT_DIR)"
    )
    wandb: WandbConfig = Field(default=WandbConfig(), description="Weights & Biases tracking (the wandb extra)")

    @field_validator("tasks")
    @classmethod
    def _unique_names(cls, tasks: list[TaskConfig]) -> list[TaskConfig]:
        labels = [task.label for task in tasks]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"task names must be unique; repeated: {', '.join(repeated)} (set 'name')")
        return tasks

    @model_validator(mode="after")
    def _filter_keeps_a_batch(self) -> RunConfig:
        """A kept set must fill the replay batch; under a threshold that is known only when the task starts."""
        rule, size = self.synthetic.filter, self.synthetic.size
        kept = None if rule is None else rule.count(size)
        for index, task in enumerate(self.tasks):
            if kept is not None and kept < (batch := self.schedule(task)["batch_size"]):
                raise ValueError(f"synthetic.filter.keep keeps {kept} of the {size} pairs of a set, fewer than the "
                                 f"replay batch of tasks[{index}] ({batch}); raise keep or synthetic.size")  # fmt: skip
        return self

    def schedule(self, task: TaskConfig) -> dict[str, Any]:
        """The task's lr, iterations, warm-up and batch size: its own where set, else the training defaults."""
        keys = ("lr", "iterations", "warmup", "batch_size")
        return {key: getattr(self.training, key) if getattr(task, key) is None else getattr(task, key) for key in keys}


def load_config(path_or_name: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read and check a YAML run config, a file or a shipped config's name, its bases merged in and `--set`
    overrides applied (compose.py); any problem is a UserError that names the file, the key and the rule."""
    data, base = compose(path_or_name, overrides)
    return parse_config(data, base=base, source=str(path_or_name))


def resolved_yaml(config: RunConfig) -> str:
    """The config as a run uses it, every default included, as YAML that loads back as the same config."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


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
