"""Shared helpers for every test folder."""

from __future__ import annotations

import os
import uuid

import pytest


def random_suffix() -> str:
    return uuid.uuid4().hex[:8]


def random_sku(name: str = "") -> str:
    return f"sku-{name}-{random_suffix()}"


def random_batchref(name: str = "") -> str:
    return f"batch-{name}-{random_suffix()}"


def random_orderid(name: str = "") -> str:
    return f"order-{name}-{random_suffix()}"


def service_missing(reason: str) -> None:
    """Skip with ``reason`` locally; fail under CI, where every service must answer."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)
