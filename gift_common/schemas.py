"""The pydantic models of the public contract (API.md), shared by the API and its clients."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.cancelled)


class JobRequest(BaseModel):
    """A batch of prompts to synthesise. Server-side limits (prompt count, length) are checked by the API."""

    model_config = ConfigDict(extra="forbid")

    prompts: list[str] = Field(min_length=1)
    model: str | None = None
    seed: Seed = 0
    seeds: list[Seed] | None = None
    num_inference_steps: int = Field(default=25, ge=1, le=200)
    guidance_scale: float = Field(default=7.5, ge=0, le=30, allow_inf_nan=False)
    height: int | None = Field(default=None, ge=8, le=2048, multiple_of=8)
    width: int | None = Field(default=None, ge=8, le=2048, multiple_of=8)
    negative_prompt: str | None = None

    @field_validator("prompts")
    @classmethod
    def _prompts_non_empty(cls, prompts: list[str]) -> list[str]:
        for i, prompt in enumerate(prompts):
            if not prompt.strip():
                raise ValueError(f"prompt {i} is empty")
        return prompts

    @model_validator(mode="after")
    def _seeds_match_prompts(self) -> JobRequest:
        if self.seeds is not None and len(self.seeds) != len(self.prompts):
            raise ValueError(
                f"seeds has {len(self.seeds)} entries but prompts has {len(self.prompts)}; they must match"
            )
        return self

    def seed_of(self, index: int) -> int:
        return self.seeds[index] if self.seeds is not None else self.seed + index


class ImageInfo(BaseModel):
    index: int
    prompt: str
    seed: int
    sha256: str
    url: str


class JobStatus(BaseModel):
    id: str
    status: JobState
    total: int
    done: int
    cached: int
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    images: list[ImageInfo] = []


class ModelInfo(BaseModel):
    name: str
    height: int
    width: int
    default: bool = False
    stand_in: bool = False  # random weights (a rehearsal's stand-in): its images are not results
