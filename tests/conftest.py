"""Fixtures shared by every test: where the real data sets are, fresh workspaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The real public data sets sit beside the checkout (see ../shared/data/README.md);
# they are read in place, never copied into the repository.
SHARED_DATA = Path(os.environ.get("CLM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"the shared data sets are missing at {SHARED_DATA}")
        pytest.skip(f"shared data sets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def workspace(tmp_path: Path):
    """A fresh workspace in a temporary folder, UTC, EUR."""
    import clm

    ws = clm.init(tmp_path / "ws")
    yield ws
    ws.close()
