"""Synthetic sets: the prompt pools of METHOD.md, the request, and the local cache that makes reruns generator-free."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from gift_common.client import GeneratorUnavailable
from gift_common.errors import UserError
from gift_common.schemas import JobRequest
from services.testing.fake_generator import FakeGenerator
from services.trainer.config import SyntheticConfig
from services.trainer.synthetic import SetCache, SyntheticPairs, SyntheticSets, prompt_pool, set_request


def unreachable() -> FakeGenerator:
    raise GeneratorUnavailable("http://127.0.0.1:1", "ConnectError", 1)


def requests(size: int = 6) -> dict[str, JobRequest]:
    settings = SyntheticConfig(size=size, steps=4, seed=5)
    first = prompt_pool(["tree", "car"], settings.concept_template, [])
    second = prompt_pool(["tree", "car"], settings.concept_template, [(["red", "blue"], "a {} thing.")])
    return {"one": set_request(first, settings, 0), "two": set_request(second, settings, 1)}


def obtain(cache: SetCache, factory) -> dict[str, list[Path]]:
    sets = SyntheticSets(requests(), cache, factory)
    try:
        return {task: sets.paths(task) for task in ("one", "two")}
    finally:
        sets.close()


def test_the_pool_holds_concepts_and_earlier_classes_in_their_templates() -> None:
    pool = prompt_pool(
        ["tree", "car", "tree"], "a photo of a {}.", [(["7", "8"], 'the number "{}".'), (["car"], "a {}.")]
    )
    assert pool == ["a photo of a tree.", "a photo of a car.", 'the number "7".', 'the number "8".', "a car."]


def test_a_set_draws_uniformly_from_its_pool_with_its_own_seeds() -> None:
    settings = SyntheticConfig(size=2000, seed=3, steps=4, guidance=2.0, model="sd15", scheduler="directory")
    pool = [f"a photo of a {i}." for i in range(4)]
    request = set_request(pool, settings, task_index=2)
    counts = Counter(request.prompts)
    assert set(counts) == set(pool) and min(counts.values()) > 400
    assert request == set_request(pool, settings, task_index=2)
    assert request.prompts != set_request(pool, settings, task_index=1).prompts
    assert (request.seed, request.num_inference_steps, request.guidance_scale, request.model) == (4003, 4, 2.0, "sd15")
    assert request.scheduler == "directory"
    assert set_request(pool, settings, task_index=1).seed + 2000 == request.seed  # no seed repeats across tasks


def test_a_second_run_reads_the_cache_and_never_calls_the_generator(tmp_path: Path) -> None:
    generator = FakeGenerator()
    first = obtain(SetCache(tmp_path), lambda: generator)
    assert generator.calls == {"submit": 2, "wait": 2, "archive": 2}  # one download per set
    assert [len(paths) for paths in first.values()] == [6, 6]
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() == p.stem for paths in first.values() for p in paths)
    assert obtain(SetCache(tmp_path), unreachable) == first


def test_sets_come_in_order_and_the_next_is_generated_while_one_downloads(tmp_path: Path) -> None:
    generator = FakeGenerator()
    obtain(SetCache(tmp_path), lambda: generator)
    assert generator.order == ["submit", "wait", "submit", "archive", "wait", "archive"]
    assert [request.seed for request in generator.jobs.values()] == [5, 11]


def test_a_corrupt_cached_image_is_fetched_again(tmp_path: Path) -> None:
    first = obtain(SetCache(tmp_path), FakeGenerator)
    first["two"][0].write_bytes(b"not the image")
    generator = FakeGenerator()
    assert obtain(SetCache(tmp_path), lambda: generator) == first
    assert generator.calls["archive"] == 1 and generator.calls["submit"] == 1


def test_a_set_evicted_before_its_download_is_asked_for_again(tmp_path: Path) -> None:
    generator = FakeGenerator(["evicted"])
    stored = obtain(SetCache(tmp_path / "evicted"), lambda: generator)
    names = {task: [path.name for path in paths] for task, paths in stored.items()}
    assert names == {task: [p.name for p in paths] for task, paths in obtain(SetCache(tmp_path), FakeGenerator).items()}
    assert generator.order == ["submit", "wait", "submit", "archive", "submit", "wait", "archive", "wait", "archive"]
    sets = SyntheticSets(requests(), SetCache(tmp_path / "gone"), lambda: FakeGenerator(["evicted", "evicted"]))
    with pytest.raises(UserError, match=r"synthetic set of task one: .* 410: images \[0\] of job 2 were evicted"):
        sets.paths("one")  # evicted again: not asked for a third time
    sets.close()


@pytest.mark.parametrize(
    ("archive", "message"),
    [("corrupt", "arrived with SHA-256 [0-9a-f]+; the bytes are corrupt"), ("short", "ended after 5 of its 6 images")],
)
def test_an_archive_with_other_bytes_or_fewer_images_stores_no_set(tmp_path: Path, archive: str, message: str) -> None:
    sets = SyntheticSets(requests(), SetCache(tmp_path), lambda: FakeGenerator([archive]))
    with pytest.raises(UserError, match=f"synthetic set of task one: .*{message}"):
        sets.paths("one")
    sets.close()
    assert not SetCache(tmp_path).manifest_path(requests()["one"]).exists()
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() == p.stem for p in tmp_path.rglob("*.png"))


def test_an_unreachable_generator_is_a_clear_error(tmp_path: Path) -> None:
    sets = SyntheticSets(requests(), SetCache(tmp_path), unreachable)
    with pytest.raises(UserError, match=r"synthetic set of task one: generator unavailable.*GIFT_GENERATOR_URL"):
        sets.paths("one")
    sets.close()


def test_a_process_that_does_not_fetch_waits_for_the_shared_cache(tmp_path: Path) -> None:
    reader = SyntheticSets(requests(), SetCache(tmp_path), unreachable, fetch=False, timeout=30)
    fetched = obtain(SetCache(tmp_path), FakeGenerator)
    assert {task: reader.paths(task) for task in ("one", "two")} == fetched
    reader.close()


def test_pairs_are_images_tokens_and_indices(tmp_path: Path) -> None:
    paths = obtain(SetCache(tmp_path), FakeGenerator)["one"]
    tokens = torch.arange(6 * 3).reshape(6, 3)
    pairs = SyntheticPairs(paths, tokens, lambda image: torch.tensor(image.size))
    image, token, index = pairs[4]
    assert image.tolist() == [8, 8] and torch.equal(token, tokens[4]) and index == 4


def test_a_sets_redrawn_images_are_counted_and_kept_with_the_set(tmp_path: Path) -> None:
    generator = FakeGenerator()
    generator.replaced = 2
    sets = SyntheticSets(requests(), SetCache(tmp_path), lambda: generator)
    assert (sets.replaced("one"), sets.replaced("two")) == (2, 2)
    sets.close()
    cached = SyntheticSets(requests(), SetCache(tmp_path), unreachable)  # read from the cache: the count too
    assert cached.replaced("two") == 2
    cached.close()
    manifest = SetCache(tmp_path).manifest_path(requests()["one"])
    body = json.loads(manifest.read_text())
    del body["replaced"]
    manifest.write_text(json.dumps(body))  # as a set stored before the count was kept
    older = SyntheticSets(requests(), SetCache(tmp_path), unreachable)
    assert older.replaced("one") is None and len(older.paths("one")) == 6
    older.close()
