"""Settings shared by every test: AWS credentials that can reach nothing real."""

import os

# Tests talk only to moto and DynamoDB Local; these keep boto3 from finding real
# credentials or a real region on a developer's machine.
for name, value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}.items():
    os.environ[name] = value
for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(name, None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull


# One tracer provider for the whole test session (OpenTelemetry allows one per process):
# spans go to memory, and the `spans` fixture hands a test those it recorded.
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

_SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_SPANS))
trace.set_tracer_provider(_provider)

from pathlib import Path  # noqa: E402

from tests.support.cluster import Cluster  # noqa: E402


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _SPANS.clear()
    yield _SPANS
    _SPANS.clear()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Agents, runners and in-memory AWS for one test (tests/support/cluster.py); a
    module that needs another kind of cluster defines its own fixture of this name."""
    made = Cluster(tmp_path)
    yield made
    made.shutdown()
