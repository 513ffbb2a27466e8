"""Fair turns on the model (app/security.py ClientShare): an address over its share waits, in order, and
never in front of another address; waiting is bounded in number and time."""

from __future__ import annotations

import asyncio
import json

import pytest

from app.security import ClientShare


class Held:
    """An inner app whose requests start (recorded) and then hold until released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    async def __call__(self, scope, receive, send) -> None:
        name = scope["name"]
        self.started.append(name)
        self.gates[name] = gate = asyncio.Event()
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def scope(name: str, client: str, path: str = "/api/next-token") -> dict:
    return {"type": "http", "method": "POST", "path": path, "client": (client, 1), "name": name}


async def call(app, name: str, client: str, path: str = "/api/next-token") -> list[dict]:
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    await app(scope(name, client, path), None, send)
    return sent


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_turns_go_round_the_addresses() -> None:
    async def main():
        inner = Held()
        share = ClientShare(inner, limit=1, max_waiting=10, wait_s=5)
        tasks = [asyncio.create_task(call(share, n, c)) for n, c in
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
        assert [r[0]["status"] for r in results] == [200] * 4
        assert share.in_flight == {} and share.waiting == {} and share.n_waiting == 0

    asyncio.run(main())


def test_waiting_is_bounded_in_number_and_time() -> None:
    async def main():
        inner = Held()
        share = ClientShare(inner, limit=1, max_waiting=1, wait_s=0.2)
        first = asyncio.create_task(call(share, "a1", "10.0.0.1"))
        second = asyncio.create_task(call(share, "a2", "10.0.0.1"))
        await settle()
        full = await call(share, "a3", "10.0.0.1", "/partials/loss")
        assert full[0]["status"] == 503
        assert full[1]["body"].decode().startswith("The server is full: 1 requests are already waiting")
        late = await second  # waited its longest without a turn
        assert late[0]["status"] == 503
        message = json.loads(late[1]["body"])["message"]
        assert message.startswith("Your requests waited 0.2 s for a turn") and message.endswith("at once.")
        inner.gates["a1"].set()
        await first
        assert share.in_flight == {} and share.n_waiting == 0

    asyncio.run(main())


def test_a_request_that_goes_away_while_waiting_gives_up_its_place() -> None:
    async def main():
        inner = Held()
        share = ClientShare(inner, limit=1, max_waiting=5, wait_s=5)
        first = asyncio.create_task(call(share, "a1", "10.0.0.1"))
        gone = asyncio.create_task(call(share, "a2", "10.0.0.1"))
        after = asyncio.create_task(call(share, "a3", "10.0.0.1"))
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


@pytest.mark.parametrize("path", ["/api/tokenize", "/static/css/deepdive.css"])
def test_requests_without_the_model_take_no_turn(path: str) -> None:
    async def main():
        inner = Held()
        share = ClientShare(inner, limit=1, max_waiting=0, wait_s=1)
        tasks = [asyncio.create_task(call(share, f"r{i}", "10.0.0.1", path)) for i in range(3)]
        await settle()
        assert len(inner.started) == 3
        for g in inner.gates.values():
            g.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
