from __future__ import annotations

import pytest

from engines import ENGINES, make_warehouse


@pytest.fixture(params=ENGINES)
def wh(request, tmp_path_factory):
    """A fresh warehouse on each engine: the behaviour suite must agree across them."""
    yield from make_warehouse(request.param, tmp_path_factory.getbasetemp())
