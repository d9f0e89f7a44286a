"""A property-based run over the OpenAPI document (schemathesis): generated requests
to every read endpoint must never give a server error, and every answer must match
the documented status codes and schemas (the one error envelope included)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from server_support import TOKEN, Served, serve_demo

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import positive_data_acceptance  # noqa: E402

_served: dict[str, Served] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_demo(tmp_path_factory.mktemp("schema"), customers=500) as s:
        _served["s"] = s
        yield s


def test_every_endpoint_against_its_schema(server: Served) -> None:
    schema = schemathesis.openapi.from_url(server.url + "/api/v1/openapi.json")
    failures = []
    for result in schema.get_all_operations():
        op = result.ok()

        @settings(
            max_examples=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=op.as_strategy())
        def check(case: object) -> None:
            case.call_and_validate(  # type: ignore[attr-defined]
                base_url=server.url,
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=30,
                # A schema cannot say "start on or before end" or "a model that
                # exists": such requests conform and still get a documented 400/404.
                excluded_checks=[positive_data_acceptance],
            )

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report
            failures.append(f"{op.label}: {exc}")
    assert failures == [], "\n\n".join(failures)
