"""services.generator.replies against the reply shapes a real redis-server and redis-py produce."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from services.generator import replies
from services.stack import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def text_client(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def bytes_client(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url)
    yield client
    client.close()


def test_text_replies_of_a_decoding_client(text_client: redis.Redis) -> None:
    text_client.hset("h", mapping={"a": "1", "b": "é"})
    text_client.zadd("z", {"x": 1, "y": 2})
    assert replies.text(text_client.hget("h", "b")) == "é"
    assert replies.optional_text(text_client.hget("h", "missing")) is None
    assert replies.text_hash(text_client.hgetall("h")) == {"a": "1", "b": "é"}
    assert replies.texts(text_client.zrange("z", 0, -1)) == ["x", "y"]


def test_a_client_of_the_wrong_kind_is_named(text_client: redis.Redis, bytes_client: redis.Redis) -> None:
    text_client.set("k", "v")
    with pytest.raises(TypeError, match="decode_responses=True"):
        replies.text(bytes_client.get("k"))
    with pytest.raises(TypeError, match="does not decode"):
        replies.data(text_client.get("k"))
    assert replies.data(bytes_client.get("k")) == b"v"
    assert replies.data(bytes_client.get("missing")) is None
    with pytest.raises(TypeError, match="got None"):
        replies.text(text_client.get("missing"))


def test_stream_entries_of_xclaim_and_xreadgroup(text_client: redis.Redis) -> None:
    first = text_client.xadd("s", {"indices": "0,1"})
    second = text_client.xadd("s", {"indices": "2"})
    other = text_client.xadd("t", {"job": "j"})
    for stream in ("s", "t"):
        text_client.xgroup_create(stream, "g", id="0")
    read = text_client.xreadgroup("g", "c1", {"s": ">", "t": ">"})
    assert replies.group_read(read) == [(first, {"indices": "0,1"}), (second, {"indices": "2"}), (other, {"job": "j"})]
    text_client.xdel("s", first)  # deleted after its delivery: its pending entry has no fields any more
    assert replies.group_read(text_client.xreadgroup("g", "c1", {"s": "0"})) == [(second, {"indices": "2"})]
    claimed = text_client.xclaim("s", "g", "c2", 0, [first, second])
    assert replies.entries(claimed) == [(second, {"indices": "2"})]
    _, autoclaimed, _ = text_client.xautoclaim("t", "g", "c2", 0)
    assert replies.entries(autoclaimed) == [(other, {"job": "j"})]
