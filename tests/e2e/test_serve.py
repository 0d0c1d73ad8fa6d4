"""`allocation serve`: the API as a process, driven by a plain HTTP client."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.e2e.conftest import _free_port, error_line

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.e2e.conftest import Cli

pytestmark = pytest.mark.e2e


@dataclasses.dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    stderr: Path
    stdout: Path

    def stop(self, how: signal.Signals = signal.SIGTERM) -> int:
        self.process.send_signal(how)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"serve ignored {how.name}: {self.errors()}") from None

    def errors(self) -> str:
        return self.stderr.read_text()


def start_server(cli: Cli, *args: str, **env: str) -> Server:
    port = _free_port()
    stderr, stdout = cli.cwd / f"serve-{port}.err", cli.cwd / f"serve-{port}.out"
    with stderr.open("wb") as err, stdout.open("wb") as out:
        process = subprocess.Popen(
            [*cli.launcher, "serve", "--port", str(port), *args],
            cwd=cli.cwd,
            env=cli.env | env,
            stdout=out,
            stderr=err,
        )
    server = Server(process, f"http://127.0.0.1:{port}", stderr, stdout)
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, server.errors()
        assert time.monotonic() < deadline, "the server never answered"
        try:
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)


@pytest.fixture
def server(migrated: Cli) -> Iterator[Server]:
    running = start_server(migrated)
    yield running
    if running.process.poll() is None:
        running.stop()


def test_the_books_api_scenario_against_the_books_paths(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for ref, sku, eta in (
            ("b-early", "LAMP", "2011-01-01"),
            ("b-late", "LAMP", "2011-01-02"),
            ("b-other", "TABLE", None),
        ):
            added = client.post(
                "/add_batch", json={"ref": ref, "sku": sku, "qty": 100, "eta": eta}
            )
            assert added.status_code == 201, added.text

        allocated = client.post(
            "/allocate", json={"orderid": "o1", "sku": "LAMP", "qty": 3}
        )
        unknown = client.post(
            "/allocate", json={"orderid": "o2", "sku": "NOPE", "qty": 3}
        )
        shown = client.get("/allocations/o1")
        missing = client.get("/allocations/o2")

    assert allocated.status_code == 202
    assert allocated.json() == {"batchref": "b-early"}
    assert unknown.status_code == 400
    assert unknown.json() == {"message": "Invalid sku NOPE"}
    assert shown.status_code == 200
    assert shown.json() == [{"sku": "LAMP", "batchref": "b-early"}]
    assert missing.status_code == 404


def test_the_event_stream_tails_the_log_and_sigterm_stops_it_all(
    server: Server,
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        client.post("/batches", json={"ref": "b1", "sku": "LAMP", "qty": 9})
        seen: list[dict[str, object]] = []
        with client.stream("GET", "/events/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            client.post("/allocations", json={"orderid": "o1", "sku": "LAMP", "qty": 1})
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line.removeprefix("data: ")))
                if len(seen) == 2:
                    break
            # The stream is still open: a stop signal must end it and the server.
            code = server.stop(signal.SIGTERM)

    assert [event["name"] for event in seen] == ["batch_created", "allocated"]
    assert code == 0, server.errors()
    assert "Traceback" not in server.errors()


def test_head_of_the_event_stream_answers_and_ends(server: Server) -> None:
    """Regression: HEAD was a 405; as a GET it would stream until the client left."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        answer = client.head("/events/stream")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.content == b""
    assert server.stop() == 0, server.errors()
    assert "Traceback" not in server.errors()


def test_a_chunked_body_past_the_limit_is_refused_while_read(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):  # 2.5 MiB, 1 MiB allowed
            yield b" " * 65536

    answer = httpx.post(
        f"{server.url}/batches",
        content=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )

    assert answer.status_code == 413
    assert answer.json()["type"] == "/problems/payload-too-large"
    assert server.stop() == 0, server.errors()
    assert "Traceback" not in server.errors()


def test_each_request_is_logged_unless_no_access_log(migrated: Cli) -> None:
    logged, unlogged = start_server(migrated), start_server(migrated, "--no-access-log")
    for running in (logged, unlogged):
        httpx.get(f"{running.url}/allocations/o-404", timeout=10)
        assert running.stop() == 0, running.errors()

    assert "GET /allocations/o-404" in logged.stdout.read_text()
    assert "/allocations/o-404" not in unlogged.stdout.read_text()
    assert "/allocations/o-404" not in unlogged.errors()


def test_sigint_stops_it_cleanly(server: Server) -> None:
    assert server.stop(signal.SIGINT) == 0, server.errors()
    assert "Traceback" not in server.errors()


def test_a_database_without_the_schema_is_one_line(cli: Cli) -> None:
    result = cli("serve", "--port", str(_free_port()))

    assert "allocation db upgrade" in error_line(result)


def test_a_port_in_use_is_one_line(server: Server, migrated: Cli) -> None:
    port = server.url.rsplit(":", 1)[1]

    result = migrated("serve", "--port", port)

    assert f"cannot listen on 127.0.0.1:{port}" in error_line(result)


def test_a_bad_port_is_a_usage_error(cli: Cli) -> None:
    result = cli("serve", "--port", "70000")

    assert result.returncode == 2
    assert "invalid port" in error_line(result)
