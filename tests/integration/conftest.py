"""Shared fixtures for integration tests: a real HTTP server on 127.0.0.1 and a client for it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from httpserver import HttpServer


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    """A started HttpServer on a free 127.0.0.1 port; script it with ``route()``."""
    with HttpServer() as server:
        yield server


@pytest.fixture
def http_client() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client
