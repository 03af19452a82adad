"""Property-based API testing: schemathesis generates requests, valid and invalid, from the
OpenAPI document the running service serves; no response may be a server error (5xx)."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from skylapse.api.processing import ProcessingSettings, create_processing_app
from skylapse.api.server import ServerThread
from skylapse.processing.ingest import Ingestor
from skylapse.synthetic import generate_sequence
from tests_support import commit_frames_to_inbox

TOKEN = "schemathesis-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 80  # per generation mode, over all operations: a few seconds on loopback


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The service on a loopback port, over a catalog with one sequence (so that valid render
    requests get through) and no workers (so that queued jobs stay put)."""
    tmp = tmp_path_factory.mktemp("st")
    data = tmp / "data"
    generate_sequence(tmp / "gen", frames=3, size=(64, 36), seed=2)
    commit_frames_to_inbox(tmp / "gen", data / "inbox" / "peak-1")
    app = create_processing_app(ProcessingSettings(
        data_dir=data, token=TOKEN, workers=0, ingest_every_s=None, render_after_min=None))
    jobs = app.state.jobs
    Ingestor(data / "inbox", jobs.store, data / "quarantine", jobs.catalog).scan()
    with ServerThread(app) as server:
        yield server


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(served, mode):
    schema = schemathesis.openapi.from_url(served.url + "/openapi.json", headers=AUTH)
    seen: Counter = Counter()

    @given(case=schema.as_strategy(mode, headers=AUTH))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],  # report a failure at once, unshrunk
              suppress_health_check=list(HealthCheck))
    def no_5xx(case):
        response = case.call(base_url=served.url, headers=AUTH, timeout=10)
        seen[(case.method, case.path, response.status_code)] += 1
        assert response.status_code < 500, (case.method, case.formatted_path, case.body,
                                            response.status_code, response.text[:300])

    no_5xx()
    operations = {(method, path) for method, path, _ in seen}
    assert len(operations) >= 6, seen  # the run reached most operations
    if mode == GenerationMode.NEGATIVE:  # invalid input was refused as such
        assert any(code == 422 for *_, code in seen), seen
    else:
        assert any(code in (200, 202) for *_, code in seen), seen
