from __future__ import annotations

import io
import json
import logging

from flakeguard.observability import configure_logging, get_logger, log_context
from flakeguard.settings import LogLevel


def test_json_lines_have_the_specs_shape_and_job_context() -> None:
    out = io.StringIO()
    configure_logging(LogLevel.INFO, stream=out)
    with log_context(jobId="job_123", correlationId="corr_456"):
        get_logger().info("Processing runs ingestion job", workflowRunId=789, token="ghs_secret")
    get_logger().debug("hidden at info")
    library = logging.getLogger("uvicorn.error")
    library.handlers[:] = [logging.NullHandler()]  # as a library's own logging config leaves it
    library.propagate = False
    configure_logging(LogLevel.INFO, stream=out)  # takes library loggers back
    library.warning("library line")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert first["level"] == "info"
    assert first["msg"] == "Processing runs ingestion job"
    for key in ("time", "pid", "hostname"):
        assert key in first
    assert first["time"].endswith("Z")
    assert (first["jobId"], first["correlationId"], first["workflowRunId"]) == (
        "job_123",
        "corr_456",
        789,
    )
    assert first["token"] == "[redacted]"
    assert lines[1]["level"] == "warn"
    assert lines[1]["msg"] == "library line"


def test_trace_and_fatal_levels() -> None:
    out = io.StringIO()
    configure_logging(LogLevel.TRACE, stream=out)
    get_logger().debug("debug shows at trace")
    get_logger().critical("boom")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["level"] for line in lines] == ["debug", "fatal"]
    configure_logging(LogLevel.FATAL, stream=out)
    get_logger().error("not shown")
    assert "not shown" not in out.getvalue()
