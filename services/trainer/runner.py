"""One continual fine-tuning run: the tasks in order, each trained by the engine, then every task's evaluation
split (`evaluation.split`: test, or val while choosing settings) evaluated zero-shot (a row of the accuracy matrix
A), checkpointed so that `--resume` ends where a run that was never stopped ends. The same evaluation before any
training gives the zero-shot row; the tiny world's pre-training probe, where asked for, follows each evaluation.

The output folder holds `checkpoint.pt` (the latest, written atomically after each task and every N iterations),
`weights/NN_TASK.safetensors` (the model after task NN, a state dict `open_clip.create_model(arch, pretrained=FILE)`
loads as it is), `losses.jsonl` (one line per step), the reports of `reports.py`, and `config.json` (the config as it
was run). `Runner.measure` evaluates given weights alone, for `gift eval`.
Under torchrun every process trains; only process 0 writes files.
"""

from __future__ import annotations

import json
import pickle
import re
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import safetensors.torch
import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from gift_common.client import GeneratorClient
from gift_common.errors import UserError
from gift_common.files import atomic_file, atomic_write, remove_orphans
from gift_common.schemas import JobRequest
from gift_common.stand_in import is_stand_in
from services.trainer import adaptation, datasets, distributed, filtering, reports
from services.trainer.config import RunConfig, TaskConfig
from services.trainer.context import ReplaySet, Task
from services.trainer.engine import Engine, StepLog
from services.trainer.evaluation import probe_accuracies, zero_shot_accuracy
from services.trainer.models import create_model, create_tokenizer, image_transforms
from services.trainer.plugins import Probe, ReplaySets
from services.trainer.registries import METHODS, PROBES, REPLAY_SOURCES
from services.trainer.streams import BatchStream, in_order
from services.trainer.synthetic import (
    SyntheticPairs,
    TaskByTask,
    concept_names,
    default_cache_dir,
    generator_sets,
    prompt_pool,
    set_request,
    split_by_adapter,
)
from services.trainer.tracking import Tracker

CHECKPOINT = "checkpoint.pt"
LOSSES = "losses.jsonl"
CONFIG = "config.json"
WEIGHTS = "weights"
# Settings a resumed run may change: they do not change what the run computes.
OPERATIONAL = {
    "output_dir": True,
    "progress": True,
    "checkpoint_every": True,
    "device": True,
    "tensorboard": True,
    "wandb": True,
    "training": {"num_workers", "grad_checkpointing"},  # the same gradients, recomputed or kept
    "evaluation": {"num_workers"},
    "synthetic": {"generator_url": True, "timeout": True, "cache_dir": True, "adapt": {"timeout"}},
}


@dataclass
class TaskData:
    """A task of the sequence with its data loaded and its prompts written out."""

    config: TaskConfig
    classnames: list[str]
    templates: list[str]
    train: Dataset
    evaluated: Dataset  # the split the matrix is measured on

    @property
    def name(self) -> str:
        return self.config.label

    @property
    def prompts(self) -> list[str]:
        """T_t: each class in the task's first template (the text side of training and of synthetic prompts)."""
        return [self.templates[0].format(c) for c in self.classnames]


def run(config: RunConfig, resume: bool, device: torch.device) -> dict[str, Any]:
    """Train and evaluate the whole sequence (from the checkpoint when resuming); returns metrics.json's content."""
    return Runner(config, device).run(resume)


class Runner:
    def __init__(self, config: RunConfig, device: torch.device) -> None:
        self.config, self.device, self.out = config, device, config.output_dir
        torch.manual_seed(config.seed)  # random initial weights, when no checkpoint is given, are the same everywhere
        self.model = build_model(config, device)
        self.tokenizer = create_tokenizer(config.model.architecture)
        self.train_transform, self.eval_transform = image_transforms(self.model)
        self.tasks = [self._load_task(task) for task in config.tasks]
        settings = config.method.settings()
        self.engine = Engine(
            self.model,
            METHODS.get(config.method.preset).build_terms(settings),
            device=device,
            teacher_mode=config.method.teacher,
            betas=config.training.betas,
            weight_decay=config.training.weight_decay,
            precision=config.training.precision,
            progress=config.progress and distributed.is_main(),
        )
        self.needs_replay = any(term.phase == "replay" for term in self.engine.terms)
        self.probe = self._load_probe()
        self.results = self._empty_results()
        self.pools: dict[str, list[str]] = {}  # P_t of each task still to train
        self.log: list[StepLog] = []
        self._log_file: TextIO | None = None
        self.tracker: Tracker | None = None

    def run(self, resume: bool) -> dict[str, Any]:
        self._start(resume)
        synthetic = self._start_synthetic() if self.needs_replay else None
        try:
            if self.results.zero_shot is None:  # a new run: the model as pre-trained
                self.results.zero_shot = self._evaluate()
                self.results.probe_zero_shot = self._evaluate_probe() if self.probe else None
                self._report()
            for index in range(self.engine.tasks_done, len(self.tasks)):
                if self.config.synthetic.adapt is not None and synthetic is not None and index > 0:
                    self._adapt(index - 1)
                task = self._task(index, synthetic)
                self.engine.train_task(task, on_step=lambda step, log, i=index: self._after_step(i, step, log))
                self.results.rows.append(self._evaluate())
                if self.results.probe is not None:
                    self.results.probe.append(self._evaluate_probe())
                self._save_weights(index)  # before the checkpoint: a run killed between them retrains and rewrites
                self._checkpoint()
                self._report()
        finally:
            if synthetic is not None:
                synthetic.close()
            if self._log_file is not None:
                self._log_file.close()
            if self.tracker is not None:
                self.tracker.close()
        return reports.summary(self.results)

    def measure(self) -> dict[str, Any]:
        """One row: the configured weights (`model.pretrained`) on every task, and the probe where there is one,
        reported as a run's are; returns metrics.json's content."""
        self.results.weights = str(self.config.model.pretrained)
        self.results.rows.append(self._evaluate())
        if self.results.probe is not None:
            self.results.probe.append(self._evaluate_probe())
        if distributed.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
        self._report()
        return reports.summary(self.results)

    # --- start and resume -----------------------------------------------------------------------------------

    def _start(self, resume: bool) -> None:
        checkpoint_path = self.out / CHECKPOINT
        if checkpoint_path.exists() and not resume:
            raise UserError(f"{self.out} holds a run already: pass --resume to continue it, or set another output_dir")
        if distributed.is_main():
            for orphan in remove_orphans(checkpoint_path):
                say(f"removed {orphan}, the half-written checkpoint of a run that was killed")
        if resume and checkpoint_path.exists():
            self._restore(torch.load(checkpoint_path, map_location=self.device, weights_only=True))
        else:
            if resume:
                say(f"no checkpoint in {self.out}: starting the run from the beginning")
            distributed.broadcast_parameters(self.model)
        if distributed.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write(self.out / CONFIG, self.config.model_dump_json(indent=2).encode())
            self._log_file = self._open_log()
            self.tracker = Tracker.for_run(self.out, len(self.log), self.device, self.config)

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        if changed := changed_settings(checkpoint["config"], self.config):
            raise UserError(f"the config changed since the checkpoint in {self.out} ({', '.join(changed)}); "
                            "resume with the same settings, or start a new run in another output_dir")  # fmt: skip
        self.engine.load_state_dict(checkpoint["engine"])
        self.results = reports.Results(**checkpoint["results"])
        self.log = checkpoint["log"]

    def _open_log(self) -> TextIO:
        """The loss log, holding exactly the steps the checkpoint holds (lines a killed run wrote later go)."""
        path = self.out / LOSSES
        path.write_text("".join(json.dumps(entry) + "\n" for entry in self.log))
        return path.open("a")

    # --- data and tasks -------------------------------------------------------------------------------------

    def _load_task(self, task: TaskConfig) -> TaskData:
        evaluation = self.config.evaluation
        names, split = datasets.classnames(task), evaluation.split
        templates = evaluation.evaluated_templates(datasets.templates(task))
        train = datasets.load_split(task, names, "train", self.train_transform, hold_out_val=split == "val")
        evaluated = datasets.load_split(task, names, split, self.eval_transform)
        batch_size = self.config.schedule(task)["batch_size"]
        if batch_size % distributed.world_size():
            raise UserError(f"task {task.label}: batch size {batch_size} must split evenly over "
                            f"{distributed.world_size()} processes")  # fmt: skip
        return TaskData(task, names, templates, train, evaluated)

    def _load_probe(self) -> Probe | None:
        evaluation = self.config.evaluation
        if evaluation.pretraining_probe == "none":
            return None
        return PROBES.get(evaluation.pretraining_probe)(evaluation.split, evaluation.probe_size, self.eval_transform)

    def _empty_results(self) -> reports.Results:
        names = [t.name for t in self.tasks]
        stand_ins = [str(path) for path in [self.config.model.pretrained] if is_stand_in(path)]
        probe = None if self.probe is None else []
        return reports.Results(names, self.config.evaluation.split, probe=probe, stand_ins=stand_ins)

    def _start_synthetic(self) -> ReplaySets:
        """The replay sets of every task still to train, from the configured source (the generator makes them in
        order while training runs)."""
        settings = self.config.synthetic
        concepts = concept_names(settings.concepts)
        requests = {}
        for index in range(self.engine.tasks_done, len(self.tasks)):
            previous = [(t.classnames, t.templates[0]) for t in self.tasks[:index]]
            self.pools[self.tasks[index].name] = pool = prompt_pool(concepts, settings.concept_template, previous)
            requests[self.tasks[index].name] = set_request(pool, settings, index)
        if settings.adapt is not None:  # a set's jobs name adapters made as the run goes: asked for task by task
            if distributed.world_size() > 1:
                raise UserError("synthetic.adapt runs in one process: train it without torchrun")
            return TaskByTask(requests, lambda name: self._adapted_set(name, requests[name]))
        return REPLAY_SOURCES.get(settings.source)(requests, settings)

    def _adapted_set(self, name: str, request: JobRequest) -> ReplaySets:
        """The task's set, its earlier tasks' classes drawn with their adapters (all made by now)."""
        settings, index = self.config.synthetic, self._index(name)
        assert settings.adapt is not None
        earlier = [(t.classnames, t.templates[0], self.results.adaptation[t.name]["adapter"])
                   for t in self.tasks[:index]]  # fmt: skip
        parts = split_by_adapter(request, adaptation.adapter_prompts(earlier), settings.adapt.scale)
        return generator_sets({name: request}, settings, parts={name: parts})

    def _index(self, name: str) -> int:
        return [task.name for task in self.tasks].index(name)

    def _adapt(self, index: int) -> None:
        """Task `index`'s adapter, trained on its images as the model that has just learnt it sees them; once per
        run: its id is checkpointed, so a resumed run replays with the same adapter."""
        data, rule = self.tasks[index], self.config.synthetic.adapt
        assert rule is not None
        if data.name in self.results.adaptation:
            return
        started = time.monotonic()
        images = datasets.load_split(data.config, data.classnames, "train", lambda image: image,
                                     hold_out_val=self.config.evaluation.split == "val")  # fmt: skip
        if rule.max_images < len(data.classnames):
            raise UserError(f"synthetic.adapt.max_images ({rule.max_images}) is fewer than the {len(data.classnames)} "
                            f"classes of task {data.name}: raise it so that every class has an image")  # fmt: skip
        if rule.select == "confident":
            confidence, labels = adaptation.confidences(self.model, images, self.tokenizer(data.prompts),
                                                        self.eval_transform, self.device, self.engine.precision,
                                                        self.config.evaluation.batch_size)  # fmt: skip
        else:
            confidence, labels = None, adaptation.labels(images)
        indices = adaptation.chosen(labels, confidence, rule.share, rule.max_images)
        say(f"task {data.name}: the generator learns it from {len(indices)} of its images")
        client = GeneratorClient(self.config.synthetic.generator_url)
        try:
            job, adapter = adaptation.adapt(client, adaptation.archive(images, indices, data.prompts),
                                            self.config.synthetic, rule, f"gift {data.name}",
                                            self.config.progress)  # fmt: skip
        finally:
            client.close()
        self.results.adaptation[data.name] = adaptation.record(job, adapter, len(indices), started)
        self._checkpoint()
        self._report()

    def _task(self, index: int, synthetic: ReplaySets | None) -> Task:
        data, schedule = self.tasks[index], self.config.schedule(self.tasks[index].config)
        return Task(
            name=data.name,
            class_tokens=self.tokenizer(data.prompts),
            train=self._stream(data.train, schedule["batch_size"], (self.config.seed, index, 0)),
            replay=None if synthetic is None else self._replay(index, synthetic, schedule["batch_size"]),
            lr=schedule["lr"],
            iterations=schedule["iterations"],
            warmup=schedule["warmup"],
        )

    def _replay(self, index: int, synthetic: ReplaySets, batch_size: int) -> ReplaySet:
        name = self.tasks[index].name
        if not synthetic.ready(name):
            say(f"task {name}: waiting for its synthetic set")
        prompts = synthetic.requests[name].prompts
        images = synthetic.images(name)
        pairs = SyntheticPairs(images, self.tokenizer(prompts), self.eval_transform)
        if self.tracker is not None:
            self.tracker.samples(name, index, images, prompts)
        self.results.synthetic[name] = {"pairs": len(pairs), "replaced": synthetic.replaced(name)}
        teacher = None
        if self.config.synthetic.filter is not None:
            choice = self._filter(name, pairs, batch_size)
            self.results.synthetic[name] |= choice.summary()
            pairs, teacher = pairs.subset(choice.kept.tolist()), choice.teacher
        workers = self.config.training.num_workers
        return ReplaySet(
            batches=self._stream(pairs, batch_size, (self.config.seed, index, 1)),
            ordered=in_order(pairs, batch_size, workers, pin_memory=self._pin_memory),
            teacher=teacher,
        )

    def _filter(self, name: str, pairs: SyntheticPairs, batch_size: int) -> filtering.Choice:
        """synthetic.filter's pairs of the task's set, as the task's teacher scores them against the set's pool."""
        settings, teacher = self.config.synthetic, self.engine.next_teacher()
        assert settings.filter is not None
        pool = self.tokenizer(self.pools[name])
        key = filtering.pass_key(teacher, pairs, pool, self.config.model.architecture, self.config.training.precision)
        how = filtering.Pass(self.device, self.engine.precision, batch_size, self.config.training.num_workers,
                             self._pin_memory)  # fmt: skip
        store = filtering.TeacherStore(default_cache_dir(settings))
        choice = filtering.choose(teacher, pairs, pool, settings.filter, store, key, how)
        if len(choice.kept) < batch_size:
            raise filtering.too_few(name, len(choice.kept), len(pairs), batch_size)
        return choice

    def _stream(self, dataset: Dataset, batch_size: int, seed: tuple[int, ...]) -> BatchStream:
        return BatchStream(
            dataset,
            batch_size,
            seed,
            num_workers=self.config.training.num_workers,
            pin_memory=self._pin_memory,
            rank=distributed.rank(),
            world=distributed.world_size(),
        )

    # --- during and after a task ----------------------------------------------------------------------------

    def _after_step(self, index: int, step: int, log: StepLog) -> None:
        entry = {"task_name": self.tasks[index].name, "task_index": index, "step": step, **log}
        self.log.append(entry)
        if self._log_file is not None:
            self._log_file.write(json.dumps(entry) + "\n")
        if self.tracker is not None:
            batch = self.config.schedule(self.tasks[index].config)["batch_size"]
            self.tracker.step(len(self.log) - 1, entry, batch * (2 if self.needs_replay else 1))
        if (step + 1) % self.config.checkpoint_every == 0:
            self._checkpoint()

    def _evaluate(self) -> list[float]:
        """Zero-shot top-1 accuracy (percent) on every task's evaluated split; under DDP each process takes a shard."""
        row = []
        tasks = tqdm(self.tasks, desc="evaluate", disable=not (self.config.progress and distributed.is_main()))
        for task in tasks:
            accuracy = zero_shot_accuracy(self.model, self.tokenizer, self._shard(task.evaluated), task.classnames,
                                          task.templates, self.device)  # fmt: skip
            row.append(100 * accuracy)
        return row

    def _evaluate_probe(self) -> dict[str, float]:
        """The pre-training probe's accuracy (percent) per concept family."""
        assert self.probe is not None
        accuracies = probe_accuracies(self.model, self.tokenizer, self._shard(self.probe.images), self.probe,
                                      self.device)  # fmt: skip
        return {family: 100 * accuracy for family, accuracy in accuracies.items()}

    def _shard(self, dataset: Dataset) -> DataLoader:
        """This process's share of an evaluation set, in order."""
        evaluation, rank, world = self.config.evaluation, distributed.rank(), distributed.world_size()
        return in_order(dataset, evaluation.batch_size, evaluation.num_workers, range(rank, len(dataset), world),
                        pin_memory=self._pin_memory)  # fmt: skip

    @property
    def _pin_memory(self) -> bool:
        """Batches for a GPU go to page-locked memory, which the GPU reads directly, and the copy need not block."""
        return self.device.type == "cuda"

    def _checkpoint(self) -> None:
        if not distributed.is_main():
            return
        assert self._log_file is not None
        self._log_file.flush()
        state = {
            "engine": self.engine.state_dict(),
            "results": asdict(self.results),
            "log": self.log,
            "config": outcome_settings(self.config),
        }
        with atomic_file(self.out / CHECKPOINT, durable=True) as file:  # a kill leaves the last checkpoint whole
            torch.save(state, file)

    def _save_weights(self, index: int) -> None:
        """The model after task `index` as safetensors: the ecosystem's format, loadable without this code."""
        if not distributed.is_main():
            return
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", self.tasks[index].name)
        tensors = {key: value.detach().cpu().contiguous() for key, value in self.engine.model.state_dict().items()}
        metadata = {"format": "pt", "architecture": self.config.model.architecture, "task": self.tasks[index].name,
                    "tasks_trained": str(index + 1)}  # fmt: skip
        path = self.out / WEIGHTS / f"{index + 1:02d}_{name}.safetensors"
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, safetensors.torch.save(tensors, metadata))

    def _report(self) -> None:
        if distributed.is_main():
            reports.write_reports(self.out, self.results, self.log)
            if self.tracker is not None:
                self.tracker.report(reports.summary(self.results), self.out / reports.HEATMAP)


def build_model(config: RunConfig, device: torch.device) -> nn.Module:
    """The open_clip model of the config; a missing or unknown file or name is a UserError."""
    try:
        model = create_model(config.model.architecture, config.model.pretrained, device=device)
    except (FileNotFoundError, ValueError) as error:
        raise UserError(f"model: {error}") from None
    except (pickle.UnpicklingError, EOFError):  # torch's own message advises weights_only=False: never here
        raise UserError(f"model: {config.model.pretrained} is not a weights file torch can read safely (a state "
                        "dict saved with torch.save, or .safetensors)") from None  # fmt: skip
    except RuntimeError as error:  # e.g. a weights file of another architecture
        raise UserError(f"model: cannot load {config.model.pretrained} into {config.model.architecture}: "
                        f"{shortened(error)}") from None  # fmt: skip
    if config.training.grad_checkpointing:  # only ever on: open_clip's HF text tower turns it on for False too
        model.set_grad_checkpointing()
    return model


def shortened(error: Exception, limit: int = 300) -> str:
    """An error's message on one line, cut to ``limit`` characters (torch lists every missing key)."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def outcome_settings(config: RunConfig) -> dict[str, Any]:
    """The config without the settings a resumed run may change (OPERATIONAL)."""
    return json.loads(config.model_dump_json(exclude=OPERATIONAL))


def changed_settings(saved: dict[str, Any], config: RunConfig) -> list[str]:
    """The top-level sections whose outcome settings differ between a saved run's and `config`.

    A setting added to the trainer after the checkpoint was written counts as its default there: the saved run
    computed what that default computes (e.g. `training.precision`, fp32), so it can still be resumed.
    """
    current = outcome_settings(config)
    return sorted(key for key in current if current[key] != _with_new_defaults(key, saved.get(key), current[key]))


def _with_new_defaults(section: str, saved: Any, current: Any) -> Any:
    field_type = RunConfig.model_fields[section].annotation
    if not (isinstance(saved, dict) and isinstance(current, dict) and set(current) - set(saved)):
        return saved
    try:  # a section with required keys (model) has no defaults to fill in
        defaults = json.loads(field_type().model_dump_json()) if isinstance(field_type, type) else {}
    except ValidationError:
        return saved
    return {**{key: value for key, value in defaults.items() if key in current and key not in saved}, **saved}


def say(message: str) -> None:
    """A line for the user, from one process only, that does not break the progress bars."""
    if distributed.is_main():
        tqdm.write(f"gift: {message}", file=sys.stderr)
