"""The axes on which a miniature must match MTIL, read from run configs: what docs/mtil-scale-model.md tabulates.

    python -m services.experiments.scale_model [CONFIG ...]   (default: MTIL Order I and the tiny world's)

For each task of each config, from the trainer's own functions (the prompt pool `synthetic.prompt_pool` builds, the
schedule `warmup_cosine` gives, the model `create_model` builds, with random weights):

- the share of the task's class names that are in its replay pool: as a whole prompt (the task's first template, as
  training writes it), and as a name (the class name, in any template of the pool);
- the share of the tokens of its class words (the token ids of its prompts that its template does not hold) that
  some prompt of the pool holds too: the token-table rows that replay, and so AWC's importance, reaches;
- Σ lr over the task's steps;

and per config the share of the model's parameters in the token table. Prints markdown.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from gift_common.schedules import warmup_cosine
from services.trainer import datasets
from services.trainer.config import RunConfig, load_config
from services.trainer.models import create_model, create_tokenizer
from services.trainer.synthetic import concept_names, prompt_pool

DEFAULT = ("mtil_order1", "tinyworld")  # shipped configs, by name
Tokenizer = Callable[[Sequence[str]], torch.Tensor]


def bare(name: str) -> str:
    """A name without case or a leading article: the tiny world's concept names carry theirs ("a cat")."""
    words = name.lower().split()
    return " ".join(words[1:] if len(words) > 1 and words[0] in ("a", "an", "the") else words)


def token_ids(tokenizer: Tokenizer, prompts: Sequence[str]) -> set[int]:
    return set(tokenizer(list(prompts)).unique().tolist())


def sum_lr(lr: float, warmup: int, iterations: int) -> float:
    factor = warmup_cosine(warmup, iterations)
    return lr * sum(factor(step) for step in range(iterations))


def token_table_share(architecture: str) -> tuple[int, float]:
    """The model's parameter count and the token table's share of it."""
    model = create_model(architecture, None)
    total = sum(p.numel() for p in model.parameters())
    return total, model.token_embedding.weight.numel() / total


def task_rows(config: RunConfig, tokenizer: Tokenizer) -> list[str]:
    settings = config.synthetic
    concepts = concept_names(settings.concepts)
    concept_set = {bare(c) for c in concepts}
    rows, previous = [], []
    for task in config.tasks:
        names, template = datasets.classnames(task), datasets.templates(task)[0]
        schedule = config.schedule(task)
        pool = prompt_pool(concepts, settings.concept_template, previous)
        pool_set = set(pool)
        known = concept_set | {bare(name) for names_, _ in previous for name in names_}
        as_prompt = sum(template.format(n) in pool_set for n in names) / len(names)
        as_name = sum(bare(n) in known for n in names) / len(names)
        words = token_ids(tokenizer, [template.format(n) for n in names]) - token_ids(tokenizer, [template.format("")])
        in_pool = len(words & token_ids(tokenizer, pool)) / len(words)
        total_lr = sum_lr(schedule["lr"], schedule["warmup"], schedule["iterations"])
        rows.append(f"| {task.label} | {len(names)} | {len(pool)} | {100 * as_prompt:.0f}% | {100 * as_name:.0f}% | "
                    f"{100 * in_pool:.0f}% ({len(words)}) | {schedule['lr']:g} × {schedule['iterations']} | "
                    f"{total_lr:.2e} |")  # fmt: skip
        previous.append((names, template))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.experiments.scale_model", description=__doc__.split("\n")[0]
    )
    parser.add_argument("configs", nargs="*", default=list(DEFAULT), help="run configs: files or shipped names")
    args = parser.parse_args(argv)
    for path in args.configs:
        config = load_config(path)
        tokenizer = create_tokenizer(config.model.architecture)
        total, share = token_table_share(config.model.architecture)
        model = Path(config.model.architecture).name
        print(f"\n{Path(path).stem}: {model}, {total:,} parameters, token table {100 * share:.1f}%\n")
        print("| task | classes | pool | class prompt in pool | class name in pool | class-word tokens in pool "
              "(tokens) | lr × steps | Σ lr |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        print("\n".join(task_rows(config, tokenizer)))


if __name__ == "__main__":
    main()
