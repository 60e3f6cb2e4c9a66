"""Shared helpers for the plant tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sim.pack import Pack, PackConfig


@pytest.fixture(scope="session")
def make_pack() -> Callable[..., Pack]:
    """Factory: ``make_pack(closed=True, **PackConfig fields)``; closed = neg and pos closed.

    Session-scoped so hypothesis tests can use it (it holds no state).
    """

    def make(closed: bool = True, **config: object) -> Pack:
        pack = Pack(PackConfig(**config))
        pack.set_contactors(closed, False, closed)
        return pack

    return make
