"""schemathesis against the OpenAPI document, over a real server process.

Requests generated from the document (valid ones and ones that break it) go
to every operation; each response must be no server error, and must have a
status, content type, headers and body that the document allows.
"""

from __future__ import annotations

import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (content_type_conformance, negative_data_rejection, not_a_server_error,
                                 response_headers_conformance, response_schema_conformance, status_code_conformance)

from server_tools import READ_KEY, WRITE_KEY, running_server
from simsearch import __version__
from simsearch.openapi import openapi_document

pytestmark = pytest.mark.slow

# The document as the server module builds it; test_served_document_is_this_one
# checks that the server serves the same.
schema = schemathesis.openapi.from_dict(openapi_document(__version__))

# Every stateless check but positive_data_acceptance: an upload the document
# allows (any bytes) is rightly refused when it is not audio.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]
# Derandomised and without a database, like the other property tests; a few
# examples per operation keep the whole file near half a minute (uploads of
# junk bytes cost an ffmpeg run each).
BOUNDED = settings(max_examples=15, deadline=None, derandomize=True, database=None,
                   suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def server(catalog_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("schema")
    shutil.copytree(catalog_dir, work / "index")
    with running_server(work / "index", work / "server.log", "--max-upload-mb", 1) as srv:
        yield srv


def test_served_document_is_this_one(server):
    assert server.get("/v1/openapi.json").json() == openapi_document(__version__)


@schema.parametrize()
@BOUNDED
def test_operation_conforms(case, server):
    case.call_and_validate(base_url=server.url, headers={"Authorization": f"Bearer {WRITE_KEY}"}, checks=CHECKS,
                           timeout=60)
    assert server.get("/v1/health").status_code == 200


@schema.include(path_regex="^/v1/tracks", method=["POST", "DELETE"]).parametrize()
@settings(BOUNDED, max_examples=5)
@pytest.mark.parametrize("key", [None, READ_KEY, "not-a-key-of-this-server"], ids=["no-key", "read-key", "bad-key"])
def test_writes_without_a_write_key_conform(case, server, key):
    # Only our key: not one the generator made up for the document's bearer scheme.
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    resp = case.call_and_validate(base_url=server.url, headers=headers, checks=CHECKS, timeout=60)
    if case.method.upper() == case.operation.method.upper():  # not a probe of an unsupported method
        # Negative cases may also drop or mangle the Authorization header.
        want = {403 if key == READ_KEY else 401} if case.meta.generation.mode.is_positive else {401, 403}
        assert resp.status_code in want, resp.text[:300]
