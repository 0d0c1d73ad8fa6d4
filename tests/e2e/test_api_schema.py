"""schemathesis against `allocation serve`: property-based requests from the OpenAPI
document, no 5xx and no response that breaks its schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.test_serve import start_server

if TYPE_CHECKING:
    from tests.e2e.conftest import Cli

pytestmark = pytest.mark.e2e

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
# Checks of what the API promises. Left out: positive_data_acceptance, since the
# domain refuses some schema-valid requests by design (an unknown sku, a reused
# Idempotency-Key), and the authorization checks (the API has no auth).
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)
# Bounded to fit CI; the seed makes a failure reproducible (ALLOCATION_FUZZ_SEED
# and ALLOCATION_FUZZ_EXAMPLES explore further).
EXAMPLES = os.environ.get("ALLOCATION_FUZZ_EXAMPLES", "12")
SEED = os.environ.get("ALLOCATION_FUZZ_SEED", "20261129")
# An event stream never ends: schemathesis reads one until its request timeout,
# so a valid stream request (one per event name, at least) costs that timeout.
CONFIG = """\
[[operations]]
include-path = "/events/stream"
request-timeout = 1
"""


# A few hundred requests, each a real round trip: more than the suite's default
# time limit on a loaded machine.
@pytest.mark.timeout(600)
def test_no_request_from_the_schema_breaks_the_api(migrated: Cli) -> None:
    config = migrated.cwd / "schemathesis.toml"
    config.write_text(CONFIG, encoding="utf-8")
    server = start_server(migrated)
    try:
        result = subprocess.run(
            [
                SCHEMATHESIS,
                "--config-file",
                str(config),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                ",".join(CHECKS),
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                EXAMPLES,
                "--seed",
                SEED,
                "--workers",
                "1",
                "--request-timeout",
                "10",
                "--no-color",
            ],
            cwd=migrated.cwd,
            env={k: v for k, v in migrated.env.items() if k != "PYTHONWARNINGS"},
            capture_output=True,
            encoding="utf-8",
            timeout=540,
            check=False,
        )
    finally:
        code = server.stop()
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert code == 0, server.errors()
    assert "Traceback" not in server.errors()
