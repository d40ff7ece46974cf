"""Logging and tracing set-up for entry points (library code only uses the APIs).

Daemons log one JSON object per line, with the deploy fields the engine passes in
`extra`; the CLI logs human lines. Tracing follows the standard OpenTelemetry
variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, ...), so Jaeger, Tempo
or X-Ray work without Flotilla code; `FLOTILLA_TRACE_FILE` writes spans to a local file.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

# Fields the engine attaches to deploy log lines (see engine.deploy.runner._log_fields).
_CONTEXT_FIELDS = ("deploy_id", "service", "instance", "state")
# botocore prints request and response bodies at DEBUG; those can hold key material
# (KMS GenerateDataKey answers), so its loggers never go below INFO.
_QUIET_LIBRARIES = ("botocore", "boto3", "urllib3", "s3transfer")
# `transitions` logs "Finished processing state X enter callbacks" at INFO for every state
# of every deploy (two thirds of an agent's log); the engine logs each transition itself,
# with the deploy's fields, so only its warnings are kept.
_CHATTY_LIBRARIES = ("transitions",)


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(*, json_lines: bool, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLines() if json_lines else logging.Formatter("%(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def configure_tracing(service_name: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install the SDK: OTLP if configured by the standard variables, a file if asked."""
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider
