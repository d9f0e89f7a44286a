from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from engines import ENGINES, make_warehouse  # noqa: E402


@pytest.fixture(params=ENGINES)
def wh(request, tmp_path_factory):
    yield from make_warehouse(request.param, tmp_path_factory.getbasetemp())
