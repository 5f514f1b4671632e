"""Property-based API test: requests generated from our own OpenAPI schema never get a 5xx
and every response matches the schema."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from bench.processes import free_port
from tests.conftest import make_settings

# The schema is loaded when the module is collected (schemathesis' lazy fixture loading does
# not work with this pytest), so the app and its folder are made here and removed below.
_FOLDER = Path(tempfile.mkdtemp(prefix="notifier-fuzz-"))
# No SMTP server listens on that port: accepted notifications are simply deferred.
_APP = create_app(make_settings(_FOLDER, free_port(), log_level="ERROR"))
# /readyz answers 503 by design here (no SMTP server): its 5xx is the point, not a fault.
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP).exclude(path="/readyz")


@pytest.fixture(scope="module", autouse=True)
def _stop_the_app() -> Iterator[None]:
    yield
    shutdown_lifespans()
    shutil.rmtree(_FOLDER, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_5xx_and_responses_match_the_schema(case: Any) -> None:
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ]
    )
