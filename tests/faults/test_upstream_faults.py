"""The test upstream's fault controls as the fault suite uses them: a share of the requests, and
a record of which fault acted on which request."""

from __future__ import annotations

import aiohttp

from tests.upstream import TestUpstream


async def _ask(http: aiohttp.ClientSession, upstream: TestUpstream, number: int, stream: bool = False) -> int:
    body = {"model": "m", "messages": [{"role": "user", "content": f"q{number}"}], "stream": stream}
    async with http.post(f"{upstream.url}/v1/chat/completions", json=body,
                         headers={"X-Request-Id": str(number)}) as response:
        try:
            await response.read()
        except aiohttp.ClientPayloadError:
            return -1  # cut
        return response.status


async def test_fault_rate_acts_on_a_share_and_records_it(upstream: TestUpstream) -> None:
    upstream.fail_status, upstream.fault_rate = 503, 0.5
    async with aiohttp.ClientSession() as http:
        statuses = [await _ask(http, upstream, n) for n in range(40)]
    faults = {r.headers["X-Request-Id"]: r.faults for r in upstream.requests}
    assert 0 < statuses.count(503) < 40 and statuses.count(503) + statuses.count(200) == 40
    assert all((faults[str(n)] == ["fail_status"]) == (status == 503) for n, status in enumerate(statuses))


async def test_a_cut_is_recorded_only_where_it_happened(upstream: TestUpstream) -> None:
    upstream.cut_after = 2
    async with aiohttp.ClientSession() as http:
        assert await _ask(http, upstream, 1, stream=True) == -1
        upstream.cut_after = 10_000  # longer than any answer: nothing is cut
        assert await _ask(http, upstream, 2, stream=True) == 200
    assert [r.faults for r in upstream.requests] == [["cut_after"], []]


async def test_no_fault_set_means_nothing_recorded(upstream: TestUpstream) -> None:
    async with aiohttp.ClientSession() as http:
        assert await _ask(http, upstream, 1) == 200
    assert upstream.requests[0].faults == [] and upstream.fault_rate == 1.0
