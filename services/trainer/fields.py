"""The field types every section of a run config shares, apart so that the modules that define config sections
(the run config, the built-in dataset sources) need not import each other."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

DEFAULT_TEMPLATE = "a photo of a {}."
PrecisionName = Literal["fp32", "bf16", "fp16"]  # precision.py: what each does
TeacherMode = Literal["cached", "per_step"]  # context.py: the teacher's embeddings cached per task, or per step


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def relative_to_config(path: Path, info: ValidationInfo) -> Path:
    """A path as written in a config file, relative to that file's folder (``context={"base": folder}``)."""
    path = path.expanduser()
    base = (info.context or {}).get("base")
    return path if path.is_absolute() or base is None else base / path


def _check_template(template: str) -> str:
    try:
        filled = template.format("\0")
    except (IndexError, KeyError, ValueError):
        filled = ""
    if template.count("{}") != 1 or filled.count("\0") != 1:
        raise ValueError("a template needs exactly one '{}' where the class name goes, and no other braces")
    return template


ConfigPath = Annotated[Path, AfterValidator(relative_to_config)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Template = Annotated[str, AfterValidator(_check_template)]
