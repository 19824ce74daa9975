"""The hostile package's one live stack, built once for all its modules (one xdist group)."""

from __future__ import annotations

import pytest

from tests.faults.hostile.stack import HostileStack, hostile, photo

__all__ = ["hostile"]  # the package fixture, imported for pytest


@pytest.fixture(scope="package")
def files(hostile: HostileStack) -> HostileStack:
    images = hostile.root / "images"
    (images / "ok.jpg").write_bytes(photo(0))
    (hostile.root / "outside.jpg").write_bytes(photo(1))
    (images / "out.jpg").symlink_to(hostile.root / "outside.jpg")
    (images / "loop-a.jpg").symlink_to(images / "loop-b.jpg")
    (images / "loop-b.jpg").symlink_to(images / "loop-a.jpg")
    (images / "album").mkdir()
    return hostile
