"""The capture service's typed events and the WebSocket JSON they stand for."""

import datetime as dt
import json
from datetime import UTC

from skylapse.capture.events import DeadlinesSkipped, FrameWritten, SessionStarted, SessionStopped
from skylapse.capture.session import SessionSummary
from skylapse.catalog.capture import FrameRecord

T0 = dt.datetime(2024, 3, 20, 17, 0, tzinfo=UTC)


def _record(**kw):
    return FrameRecord(
        path="2024-03-20/s/frame_000001.jpg", captured_at=T0, sha256="ab", size_bytes=9, id=7, **kw
    )


def test_frame_written_is_the_websocket_frame_message():
    event = FrameWritten("s", _record(latency_ms=1.5, quality_score=0.8, phase="day"))
    msg = json.loads(json.dumps(event.to_json()))
    assert msg["type"] == "frame" and msg["session_id"] == "s"
    record = msg["record"]
    assert record["image_url"] == "/frames/7/image" and record["id"] == 7
    assert record["captured_at"] == "2024-03-20T17:00:00.000000+00:00"
    assert record["bracket"] is None and record["phase"] == "day"
    # every field of the catalog record travels
    assert set(_record().to_json()) | {"image_url"} == set(record)
    assert event.first_of_shot


def test_first_of_shot_is_the_bracket_s_first_frame():
    first = FrameWritten("s", _record(bracket_set=1, bracket_index=0, ev_offset=-2.0))
    second = FrameWritten("s", _record(bracket_set=1, bracket_index=1, ev_offset=0.0))
    assert first.first_of_shot and not second.first_of_shot
    assert first.to_json()["record"]["bracket"] == {"set": 1, "index": 0, "ev_offset": -2.0}


def test_session_events():
    assert SessionStarted("s").to_json() == {"type": "session_started", "session_id": "s"}
    assert DeadlinesSkipped("s", 3).to_json() == {"type": "skipped", "session_id": "s", "count": 3}
    summary = SessionSummary("s", T0, shots=4)
    stopped = SessionStopped(summary)
    assert stopped.session_id == "s"
    assert stopped.to_json() == {"type": "session_stopped", "session": summary.to_json()}
    assert stopped.to_json()["session"]["shots"] == 4
