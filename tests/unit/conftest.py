"""The fake world the engine's unit tests run in (engine_fakes.py), closed after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine_fakes import World


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    for controller in w.controllers:
        controller.close(0)
