"""A webhook's POST reports every failure as the attempt's error, so no delivery can end without being recorded."""

from __future__ import annotations

import asyncio

import httpx

from services.generator.api.webhooks import Webhook, post


def test_a_url_the_client_refuses_is_a_failed_attempt_not_an_exception():
    """A job accepted before callback_url had its pattern may hold such a URL."""

    async def attempt() -> str | None:
        async with httpx.AsyncClient(timeout=5) as http:
            return await post(http, Webhook("j" * 32, "alice", "http://\xad/", b"{}", "secret"))

    assert asyncio.run(attempt()) == "InvalidURL: Invalid IDNA hostname: '\\xad'"
