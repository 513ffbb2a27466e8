"""Fair turns on the model (app/security.py ClientShare, taken by the ModelTurn dependency): an address over its
share waits, in order, and never in front of another address; waiting is bounded in number and time; every route
that runs the model takes a turn, and only those."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.security import ClientShare, ShareFull


class Held:
    """Requests that take a turn, start (recorded) and then hold until released."""

    def __init__(self, share: ClientShare) -> None:
        self.share = share
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    async def call(self, name: str, client: str) -> int:
        """The request's status: 200 once it had its turn, 503 when it was refused one."""
        try:
            await self.share.acquire(client)
        except ShareFull as e:
            self.refused = str(e)
            return 503
        try:
            self.started.append(name)
            self.gates[name] = gate = asyncio.Event()
            await gate.wait()
            return 200
        finally:
            self.share.release(client)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_turns_go_round_the_addresses() -> None:
    async def main():
        share = ClientShare(limit=1, max_waiting=10, wait_s=5)
        inner = Held(share)
        tasks = [asyncio.create_task(inner.call(n, c)) for n, c in
                 (("a1", "10.0.0.1"), ("a2", "10.0.0.1"), ("a3", "10.0.0.1"), ("b1", "10.0.0.2"))]
        await settle()
        assert inner.started == ["a1", "b1"]  # b's first request does not queue behind a's second
        inner.gates["a1"].set()
        await settle()
        assert inner.started == ["a1", "b1", "a2"]  # a's requests in order
        inner.gates["b1"].set()
        inner.gates["a2"].set()
        await settle()
        inner.gates["a3"].set()
        results = await asyncio.gather(*tasks)
        assert results == [200] * 4
        assert share.in_flight == {} and share.waiting == {} and share.n_waiting == 0

    asyncio.run(main())


def test_waiting_is_bounded_in_number_and_time() -> None:
    async def main():
        share = ClientShare(limit=1, max_waiting=1, wait_s=0.2)
        inner = Held(share)
        first = asyncio.create_task(inner.call("a1", "10.0.0.1"))
        second = asyncio.create_task(inner.call("a2", "10.0.0.1"))
        await settle()
        assert await inner.call("a3", "10.0.0.1") == 503
        assert inner.refused.startswith("The server is full: 1 request is already waiting")
        assert await second == 503  # waited its longest without a turn
        assert inner.refused.startswith("Your requests waited 0.2 s for a turn") and inner.refused.endswith("at once.")
        inner.gates["a1"].set()
        await first
        assert share.in_flight == {} and share.n_waiting == 0

    asyncio.run(main())


def test_a_request_that_goes_away_while_waiting_gives_up_its_place() -> None:
    async def main():
        share = ClientShare(limit=1, max_waiting=5, wait_s=5)
        inner = Held(share)
        first = asyncio.create_task(inner.call("a1", "10.0.0.1"))
        gone = asyncio.create_task(inner.call("a2", "10.0.0.1"))
        after = asyncio.create_task(inner.call("a3", "10.0.0.1"))
        await settle()
        gone.cancel()
        await settle()
        inner.gates["a1"].set()
        await settle()
        assert inner.started == ["a1", "a3"]  # the place skipped the request that went away
        inner.gates["a3"].set()
        await asyncio.gather(first, after)
        assert share.in_flight == {} and share.waiting == {} and share.n_waiting == 0

    asyncio.run(main())


@pytest.fixture(scope="module")
def full(tiny_checkpoint) -> TestClient:
    """A server whose one turn is taken and whose queue holds nobody: every request that needs a turn is refused."""
    with TestClient(create_app(Settings(model=str(tiny_checkpoint), threads=1, per_client_requests=1,
                                        max_waiting_requests=0))) as c:
        share = c.app.state.share
        asyncio.run(share.acquire("testclient"))
        yield c
        share.release("testclient")


@pytest.mark.parametrize(("method", "path", "body"), [
    ("get", "/inference?prompt=Once", None), ("get", "/internals", None), ("get", "/loss", None),
    ("post", "/partials/inference", {"prompt": "Once"}), ("post", "/partials/forward", {"prompt": "Once"}),
    ("post", "/partials/loss", {"text": "Once"}), ("get", "/download/loss.csv", None),
    ("post", "/class/ABCD/round", {}), ("post", "/class/ABCD/reveal", {}), ("post", "/class/ABCD/guess", {}),
])
def test_every_page_request_that_runs_the_model_takes_a_turn(full: TestClient, method: str, path: str,
                                                             body: dict | None) -> None:
    r = full.request(method, path, data=body)
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    assert r.headers["content-type"].startswith("text/plain")  # htmx shows the sentence in place of the result
    assert r.text.startswith("The server is full: 0 requests are already waiting for the model.")


@pytest.mark.parametrize("path", ["/api/next-token", "/api/generate", "/v1/completions"])
def test_every_api_request_that_runs_the_model_takes_a_turn(full: TestClient, path: str) -> None:
    r = full.post(path, json={"text": "Once"} if path == "/api/next-token" else {"prompt": "Once"})
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    said = r.json()["error"]["message"] if path.startswith("/v1/") else r.json()["message"]
    assert said.startswith("The server is full")


@pytest.mark.parametrize(("method", "path", "body"), [
    ("post", "/api/tokenize", {"text": "Once"}), ("get", "/tokenizer", None), ("get", "/static/css/deepdive.css", None),
    ("get", "/healthz", None),
])
def test_requests_without_the_model_take_no_turn(full: TestClient, method: str, path: str, body: dict | None) -> None:
    assert full.request(method, path, json=body).status_code == 200
