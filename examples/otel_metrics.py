"""The OpenTelemetry metrics of a throttled-then-successful call, against a local Bedrock-shaped server.

Run:  pip install -e ".[otel]" opentelemetry-sdk && python examples/otel_metrics.py

Nothing leaves this machine: the server is bedrock_hooks.testing.BedrockServer on 127.0.0.1 and the
credentials are fake. The application configures the OpenTelemetry SDK as it would for any exporter (here an
in-memory reader, so the script can print what was recorded); bedrock-hooks records into whatever
MeterProvider is set, through the global API. "Bedrock" answers two 429s, then the answer: the library
retries twice with backoff, and the metrics say so. Backoff bases are shortened so the run takes a moment.
"""

from __future__ import annotations

import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

import bedrock_hooks  # noqa: E402
from bedrock_hooks.testing import BedrockServer, Reply  # noqa: E402

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


def configure_sdk():
    """What an application does once at startup (with an OTLP or Prometheus exporter instead of the reader)."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


def run(reader) -> list[tuple[str, str, dict, str]]:
    """One throttled-then-successful Converse call; the library's data points as (instrument, unit, attributes, value)."""
    with BedrockServer() as server:
        session = boto3.Session(region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
                                aws_secret_access_key="not-a-real-secret")
        bedrock_hooks.install(session, throttle_backoff_base=0.05)
        client = session.client("bedrock-runtime", endpoint_url=server.url,
                                config=Config(retries={"mode": "standard"}))
        server.script(Reply.throttling(), Reply.throttling())
        response = client.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hello"}]}])
        print(f"requests sent: {len(server.requests)}; answer: {response['output']['message']['content'][0]['text']!r}; "
              f"RetryAttempts: {response['ResponseMetadata']['RetryAttempts']}\n")
        bedrock_hooks.uninstall(session)
    rows = []
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            if scope.scope.name != "bedrock_hooks":
                continue
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = (f"{point.value:g}" if hasattr(point, "value")
                             else f"count={point.count} sum={point.sum:.3f}{metric.unit}")
                    rows.append((metric.name, metric.unit, dict(point.attributes), value))
    return rows


def main() -> int:
    try:
        reader = configure_sdk()
    except ImportError:
        print("This example needs the OpenTelemetry SDK: pip install opentelemetry-sdk", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    for name, unit, attributes, value in run(reader):
        print(f"{name} [{unit}] {value}")
        for key, attribute in sorted(attributes.items()):
            print(f"    {key} = {attribute}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
