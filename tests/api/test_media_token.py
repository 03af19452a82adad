"""``?token=`` for media elements: accepted on the GET file endpoints only, compared like the
bearer header, and never in place of a wrong header."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from skylapse.api.auth import media_auth
from skylapse.api.processing.app import ProcessingSettings, create_processing_app
from skylapse.config import ProcessingConfig

TOKEN = "media-token-0123456789abcdef"


@pytest.fixture()
def files_app():
    app = FastAPI()

    @app.get("/file", dependencies=[Depends(media_auth(TOKEN))])
    def file() -> dict:
        return {"ok": True}

    return TestClient(app)


def test_query_token_or_header_opens_a_file_endpoint(files_app):
    assert files_app.get(f"/file?token={TOKEN}").status_code == 200
    assert files_app.get("/file", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("", {}),
        ("?token=", {}),
        (f"?token={TOKEN}x", {}),
        (f"?token={TOKEN[:-1]}", {}),
        (f"?token={TOKEN}", {"Authorization": "Bearer wrong"}),  # the header decides alone
        (f"?token={TOKEN}", {"Authorization": f"Basic {TOKEN}"}),
    ],
)
def test_missing_or_wrong_tokens_are_refused(files_app, query, headers):
    r = files_app.get("/file" + query, headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_processing_takes_the_query_token_for_timelapse_files_only(tmp_path):
    app = create_processing_app(
        ProcessingSettings(
            data_dir=tmp_path / "data",
            token=TOKEN,
            workers=0,
            ingest=False,
            processing=ProcessingConfig(render_after_min=None),
        )
    )
    with TestClient(app) as c:
        # past authentication: a missing job is a 404, not a 401
        assert c.get(f"/timelapses/nojob/timelapse.mp4?token={TOKEN}").status_code == 404
        assert c.get("/timelapses/nojob/timelapse.mp4?token=nope").status_code == 401
        for path in ("/jobs", "/timelapses", "/sequences", "/metrics"):
            assert c.get(f"{path}?token={TOKEN}").status_code == 401, path
        assert c.post(f"/jobs/x/cancel?token={TOKEN}").status_code == 401
        spec = c.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        params = spec["paths"]["/timelapses/{job_id}/{file_name}"]["get"]["parameters"]
        assert any(p["name"] == "token" and p["in"] == "query" for p in params)
