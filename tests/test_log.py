import io
import json

from skylapse import log


def test_json_lines_carry_the_correlation_id():
    stream = io.StringIO()
    log.configure("INFO", stream=stream)
    logger = log.get_logger("skylapse.test")
    with log.correlation_id("abc123") as cid:
        logger.info("frame captured", frame=7)
    logger.warning("outside")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert cid == "abc123"
    assert lines[0]["event"] == "frame captured"
    assert lines[0]["correlation_id"] == "abc123"
    assert lines[0]["frame"] == 7
    assert lines[0]["level"] == "info"
    assert "timestamp" in lines[0]
    assert "correlation_id" not in lines[1]


def test_stdlib_logging_is_json_too():
    import logging

    stream = io.StringIO()
    log.configure("INFO", stream=stream)
    logging.getLogger("somelib").warning("plain %s", "message")
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["event"] == "plain message"
    assert line["logger"] == "somelib"
