"""The README's snippets run as written, so they cannot rot (issue 8, item 13)."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.e2e.conftest import REPOSITORY, cli_in
from tests.e2e.test_serve import start_server

if TYPE_CHECKING:
    from pathlib import Path

    from tests.e2e.conftest import Cli

pytestmark = pytest.mark.e2e

_FENCED = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _snippets(section: str) -> list[tuple[str, str]]:
    """The (language, text) of every fenced block under the README's ``section``."""
    readme = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    start = readme.index(f"\n## {section}\n")
    end = readme.find("\n## ", start + 1)
    return _FENCED.findall(readme[start : end if end != -1 else None])


def _python_snippet(containing: str) -> str:
    [snippet] = [
        text
        for language, text in _snippets("Using it as a library")
        if language == "python" and containing in text
    ]
    return snippet


def test_the_library_snippet_runs_in_a_fresh_directory(tmp_path: Path) -> None:
    """Regression (issue 8): it raised SchemaOutOfDate in a fresh directory."""
    [shell] = [
        text for language, text in _snippets("Using it as a library") if not language
    ]
    (tmp_path / "app.py").write_text(_python_snippet("anyio.run(main"), "utf-8")
    cli = cli_in(tmp_path)

    outputs = []
    for line in shell.splitlines():
        program, *args = line.split()
        launcher = cli.launcher if program == "allocation" else (sys.executable,)
        result = subprocess.run(
            [*launcher, *args],
            cwd=tmp_path,
            env=cli.env,
            capture_output=True,
            encoding="utf-8",
            timeout=60,
            check=False,
        )
        assert (result.returncode, result.stderr) == (0, ""), (line, result)
        outputs.append(result.stdout)

    printed = outputs[-1].splitlines()
    assert "audit: ann@example.com" in printed
    assert printed[-1] == "[{'sku': 'LAMP', 'batchref': 'b1'}]"


def test_the_testing_snippet_is_a_test_file_pytest_runs(tmp_path: Path) -> None:
    """Regression (issue 8): it lacked its imports and the anyio marker."""
    (tmp_path / "test_welcome.py").write_text(_python_snippet("def test_"), "utf-8")
    cli = cli_in(tmp_path)

    # Outside the repository: none of this project's pytest settings or conftests.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_welcome.py"],
        cwd=tmp_path,
        env=cli.env,
        capture_output=True,
        encoding="utf-8",
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    # Once per installed backend (asyncio, and trio where it is installed); an async
    # test without the marker would be skipped, which is no pass.
    summary = result.stdout.splitlines()[-1]
    assert re.fullmatch(r"=+ [12] passed in .* =+", summary), result.stdout


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Headers whose values change from run to run; the README leaves them out.
_UNSHOWN_HEADERS = ("date:", "content-length:")


def _shown(text: str) -> list[str]:
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    return [
        _UUID.sub("<uuid>", line)
        for line in lines
        if not line.lower().startswith(_UNSHOWN_HEADERS)
    ]


def test_the_http_session_works_as_printed(migrated: Cli) -> None:
    [session] = [text for language, text in _snippets("HTTP API") if not language]
    steps: list[tuple[str, list[str]]] = []
    for line in session.splitlines():
        if line.startswith("$ "):
            steps.append((line.removeprefix("$ "), []))
        else:
            steps[-1][1].append(line)
    server = start_server(migrated)
    try:
        for command, printed in steps:
            if not command.startswith("curl "):
                continue  # starting the server: done above
            result = subprocess.run(
                ["bash", "-c", command.replace("localhost:8000", server.url)],
                capture_output=True,
                encoding="utf-8",
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, (command, result)
            assert _shown(result.stdout) == _shown("\n".join(printed)), command
    finally:
        assert server.stop() == 0, server.errors()


def test_the_metrics_snippet_prints_the_lines_shown(tmp_path: Path) -> None:
    snippets = [text for _, text in _snippets("Metrics and traces")]
    [script] = [text for text in snippets if "anyio.run" in text]
    [shown] = [text for text in snippets if text.startswith("text/plain")]
    (tmp_path / "app.py").write_text(script, "utf-8")
    cli = cli_in(tmp_path)
    cli.ok("db", "upgrade")

    result = subprocess.run(
        [sys.executable, "app.py"],
        cwd=tmp_path,
        env=cli.env,
        capture_output=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )

    assert (result.returncode, result.stderr) == (0, ""), result
    printed = result.stdout.splitlines()
    for line in shown.splitlines():
        if "_seconds_sum" in line:  # a time: it differs on every run
            line = line.rsplit(" ", 1)[0]
            assert any(each.startswith(f"{line} ") for each in printed), line
        else:
            assert line in printed
