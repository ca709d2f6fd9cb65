"""The worker's Faust transport is what ``wattsup://`` selects, through Faust's transport plug-in point.

Its delivery loop runs under every worker test on the real broker (tests/stream_processors/*_integration.py,
the kill -9 and two-worker recovery tests among them); this checks the wiring those tests rely on.
"""

from __future__ import annotations

from faust.transport import by_url
from faust.transport.drivers import aiokafka as faust_aiokafka

from stream_processors import faust_transport
from stream_processors.app import faust_app
from stream_processors.settings import StreamSettings


def test_the_wattsup_scheme_selects_the_batch_delivery_transport():
    transport = by_url(f"{faust_transport.SCHEME}://127.0.0.1:9092")
    assert transport is faust_transport.Transport
    assert transport.Consumer is faust_transport.BatchDeliveryConsumer
    assert issubclass(transport.Consumer, faust_aiokafka.Consumer)  # everything else is Faust's


def test_the_worker_app_uses_it_for_every_bootstrap_server(monkeypatch, tmp_path):
    monkeypatch.setenv("WATTSUP_KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9093")
    monkeypatch.setenv("WATTSUP_STREAM_DATA_DIR", str(tmp_path))
    app = faust_app(StreamSettings())
    assert [str(url) for url in app.conf.broker] == ["wattsup://k1:9092", "wattsup://k2:9093"]
    assert isinstance(app.transport, faust_transport.Transport)
