"""Packing and fairness of the worker's batches."""

from services.generator.worker.batcher import Backlog, Shape, Task
from services.testing.generator import SMALL, tasks

OTHER = Shape("m", 10, 7.5, 32, 32)


def test_small_job_is_not_starved_by_a_big_one():
    backlog = Backlog()
    backlog.add_chunk(tasks("big", 4000))
    backlog.add_chunk(tasks("small", 8))
    batch = backlog.next_batch(16)
    assert [t.job_id for t in batch].count("small") == 8
    assert len(batch) == 16


def test_jobs_alternate_and_the_opening_job_rotates():
    backlog = Backlog()
    backlog.add_chunk(tasks("a", 10))
    backlog.add_chunk(tasks("b", 10))
    first = backlog.next_batch(3)
    second = backlog.next_batch(3)
    assert [t.job_id for t in first] == ["a", "b", "a"]
    assert [t.job_id for t in second] == ["b", "a", "b"]


def test_shapes_are_never_mixed_in_one_batch():
    backlog = Backlog()
    backlog.add_chunk(tasks("a", 3, SMALL))
    backlog.add_chunk(tasks("b", 3, OTHER))
    batches = [backlog.next_batch(16) for _ in range(2)]
    assert {len({t.shape for t in b}) for b in batches} == {1}
    assert sorted(len(b) for b in batches) == [3, 3]
    assert backlog.next_batch(16) == []


def test_chunk_completes_only_when_every_image_is_recorded():
    backlog = Backlog()
    chunk = tasks("a", 3, entry="7-0")
    backlog.add_chunk(chunk)
    batch = backlog.next_batch(2)
    assert [backlog.complete(t) for t in batch] == [False, False]
    assert backlog.held() == {"a": ["7-0"]}
    assert backlog.complete(backlog.next_batch(2)[0]) is True
    assert backlog.held() == {}


def test_drop_job_returns_its_open_entries():
    backlog = Backlog()
    backlog.add_chunk(tasks("a", 2, entry="1-0"))
    backlog.add_chunk(tasks("a", 2, entry="2-0", start=2))
    backlog.add_chunk(tasks("b", 2, entry="3-0"))
    assert sorted(backlog.drop_job("a")) == ["1-0", "2-0"]
    assert {t.job_id for t in backlog.next_batch(16)} == {"b"}


def test_a_batch_put_back_is_made_again_first_and_stays_held():
    backlog = Backlog()
    backlog.add_chunk(tasks("a", 4, entry="1-0"))
    batch = backlog.next_batch(2)
    backlog.put_back(batch)
    assert backlog.held() == {"a": ["1-0"]}
    assert backlog.next_batch(4) == tasks("a", 4, entry="1-0")


def test_dropped_chunks_leave_the_backlog_whole_and_are_returned_to_release():
    backlog = Backlog()
    backlog.add_chunk(tasks("a", 4, entry="1-0"))
    backlog.add_chunk(tasks("a", 2, entry="2-0", start=4))
    backlog.add_chunk(tasks("b", 2, entry="3-0"))
    batch = backlog.next_batch(2)  # one image of a's first chunk, one of b's
    assert backlog.drop_chunks(batch) == {"a": ["1-0"], "b": ["3-0"]}
    assert backlog.held() == {"a": ["2-0"]}
    assert backlog.next_batch(16) == tasks("a", 2, entry="2-0", start=4)


def _of(tenant: str, job: str, n: int, priority: int = 0) -> list[Task]:
    return [
        Task(job, "1-0", i, f"p{i}", None, i, SMALL, f"{job}-{i}", tenant=tenant, priority=priority) for i in range(n)
    ]


def test_tenants_take_turns_before_jobs_so_many_jobs_get_no_more_than_one():
    backlog = Backlog()
    for j in range(60):
        backlog.add_chunk(_of("many", f"m{j}", 8))
    backlog.add_chunk(_of("one", "lone", 8))
    batch = backlog.next_batch(16)
    assert [t.job_id for t in batch].count("lone") == 8, "half of each batch goes to the tenant with one job"
    assert len({t.job_id for t in batch if t.tenant == "many"}) == 8, "the other half rotates over the many jobs"


def test_a_tenants_higher_priority_job_goes_first_and_other_tenants_keep_their_turns():
    backlog = Backlog()
    backlog.add_chunk(_of("a", "low", 8))
    backlog.add_chunk(_of("a", "high", 8, priority=5))
    backlog.add_chunk(_of("b", "other", 8, priority=-3))
    batch = backlog.next_batch(8)
    assert [t.job_id for t in batch] == ["high", "other"] * 4
