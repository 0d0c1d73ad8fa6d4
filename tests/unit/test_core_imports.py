"""The core imports no driver: the domain, the service layer, the views and the fakes."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = (
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
    "redis",
    "aiosmtplib",
    "prometheus_client",
    "opentelemetry",
)
CORE = (
    "allocation.domain.model",
    "allocation.domain.users",
    "allocation.domain.commands",
    "allocation.domain.events",
    "allocation.service_layer.messagebus",
    "allocation.service_layer.handlers",
    "allocation.service_layer.idempotency",
    "allocation.service_layer.services",
    "allocation.service_layer.unit_of_work",
    "allocation.service_layer.catchup",
    "allocation.service_layer.rebuild",
    "allocation.service_layer.relay",
    "allocation.service_layer.consumer",
    "allocation.service_layer.tracking",
    "allocation.service_layer.verify",
    "allocation.service_layer.observability",
    "allocation.service_layer.status",
    "allocation.views",
    "allocation.testing",
)


def _loaded_after_importing(module: str) -> list[str]:
    probe = (
        f"import sys, {module}\n"
        f"heavy = {HEAVY!r}\n"
        "print(' '.join(sorted({name.split('.')[0] for name in sys.modules}"
        " & set(heavy))))"
    )
    finished = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return finished.stdout.split()


@pytest.mark.parametrize("module", CORE)
def test_importing_the_core_loads_no_driver(module: str) -> None:
    assert _loaded_after_importing(module) == []


def test_no_core_module_imports_an_adapter() -> None:
    """What the core imports is checked by source, not only by what loads."""
    from pathlib import Path

    import allocation

    package = Path(allocation.__file__).parent
    core_files = [
        *sorted((package / "domain").glob("*.py")),
        *sorted((package / "service_layer").glob("*.py")),
        package / "views.py",
        package / "testing.py",
    ]
    offenders = [
        f"{path.relative_to(package)}:{number}"
        for path in core_files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "allocation.adapters" in line
        and "import" in line
        and "sqlalchemy_uow" not in line
    ]
    assert offenders == []
