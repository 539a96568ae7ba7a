"""ServiceHost heals itself: a factory that raises is retried with backoff, a step that raises is
counted, and both show in ``streamcl_component_up`` and ``streamcl_service_step_errors_total``;
the metrics pusher counts its failures; a silent source reads as down at the aggregator."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.metrics_server import down
from streaming.errors import BrokerError
from streaming.metrics import MetricGroup, sample_value
from streaming.runtime import Backoff, MetricsPusher, ServiceHost, ServiceUnavailable


class FakeService:
    """A service whose steps fail while ``fail_steps`` is positive."""

    name = "fake"

    def __init__(self, fail_steps: int = 0) -> None:
        self.steps = 0
        self.fail_steps = fail_steps
        self.closed = False

    def step(self) -> int:
        if self.fail_steps > 0:
            self.fail_steps -= 1
            raise RuntimeError("step broke")
        self.steps += 1
        time.sleep(0.001)
        return 1

    def status(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def ping(self) -> str:
        return "pong"

    def close(self) -> None:
        self.closed = True


def fast() -> Backoff:
    return Backoff(first=0.001, most=0.004)


def wait_for(predicate: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def value(host: ServiceHost, name: str) -> float | None:
    return sample_value(host.exposition(), name, {"component": host.source})


def test_backoff_doubles_up_to_its_most_and_resets():
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5


def test_a_factory_that_fails_three_times_is_retried_until_the_service_comes_up():
    calls: list[int] = []
    gate = threading.Event()
    built: list[FakeService] = []

    def factory(metrics: MetricGroup) -> FakeService:
        calls.append(1)
        if len(calls) <= 3:
            raise BrokerError("no Kafka broker at 127.0.0.1:1", "127.0.0.1:1")
        gate.wait()
        built.append(FakeService())
        return built[0]

    host = ServiceHost(factory, "joiner", MetricGroup, push_metrics=False, backoff=fast())
    try:
        wait_for(lambda: len(calls) == 4, "the factory was not retried")
        # still building: the host answers, down, with the reason
        status = host.status()
        assert status["running"] and not status["up"] and not status["built"]
        assert status["errors"] == 3 and status["last_error"] == "BrokerError: no Kafka broker at 127.0.0.1:1"
        assert value(host, "streamcl_component_up") == 0
        assert value(host, "streamcl_service_step_errors_total") == 3
        with pytest.raises(ServiceUnavailable, match="joiner is not up yet"):
            host.call("ping")
        gate.set()
        wait_for(lambda: host.status().get("steps", 0) > 0, "the service did not run")
        status = host.status()
        assert status["up"] and status["built"] and status["errors"] == 3
        assert value(host, "streamcl_component_up") == 1
        assert value(host, "streamcl_service_step_errors_total") == 3
        assert host.call("ping") == "pong"
    finally:
        gate.set()
        assert host.stop(10)
    assert len(calls) == 4 and built[0].closed
    assert value(host, "streamcl_component_up") == 0


def test_step_errors_are_counted_and_the_loop_goes_on():
    service = FakeService(fail_steps=4)
    host = ServiceHost(lambda m: service, "learner", MetricGroup, push_metrics=False, backoff=fast())
    try:
        # up is set by the host after the step returns: wait for it, not for the step
        wait_for(lambda: service.steps > 0 and host.status()["up"], "the loop did not go on after the failed steps")
        status = host.status()
        assert status["up"] and status["errors"] == 4 and status["last_error"] == "RuntimeError: step broke"
        assert value(host, "streamcl_service_step_errors_total") == 4
        assert value(host, "streamcl_component_up") == 1
        service.fail_steps = 10**9  # failing from now on: down
        wait_for(lambda: not host.status()["up"], "a failing step did not mark the component down")
        assert value(host, "streamcl_component_up") == 0
    finally:
        assert host.stop(10)
    assert service.closed


def test_a_new_host_starts_its_counter_at_zero_and_down():
    gate = threading.Event()
    host = ServiceHost(lambda m: (gate.wait(), FakeService())[1], "controller", MetricGroup, push_metrics=False)
    try:
        assert value(host, "streamcl_service_step_errors_total") == 0
        assert value(host, "streamcl_component_up") == 0
        assert host.status()["up"] is False and host.status()["last_error"] is None
    finally:
        gate.set()
        host.stop(10)


def test_a_host_stopped_while_building_closes_what_it_built():
    gate, built = threading.Event(), []

    def factory(metrics: MetricGroup) -> FakeService:
        gate.wait()
        built.append(FakeService())
        return built[-1]

    host = ServiceHost(factory, "monitor", MetricGroup, push_metrics=False)
    threading.Timer(0.2, gate.set).start()
    assert host.stop(10)
    assert len(built) == 1 and built[0].closed and built[0].steps == 0


def test_the_pusher_counts_its_failures_and_logs_them_rarely(monkeypatch, caplog):
    results = [RuntimeError("aggregator away")] * 3 + [None] * 2

    def push(self: MetricsPusher) -> None:
        outcome = results.pop(0)
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(MetricsPusher, "push", push)
    metrics = MetricGroup(CollectorRegistry())
    pusher = MetricsPusher(metrics, "joiner", interval_s=3600, log_every_s=3600)
    try:
        with caplog.at_level("WARNING", logger="streaming.runtime"):
            outcomes = [pusher.try_push() for _ in range(4)]
    finally:
        pusher.stop()
    assert outcomes == [False, False, False, True]
    assert pusher.failures == 3
    text = metrics.exposition()
    assert sample_value(text, "streamcl_metrics_push_failures_total", {"component": "joiner"}) == 3
    warnings = [r for r in caplog.records if "could not push its metrics" in r.getMessage()]
    assert len(warnings) == 1 and "aggregator away" in warnings[0].getMessage()


def test_a_silent_source_reads_as_down_at_the_aggregator():
    metrics = MetricGroup(CollectorRegistry())
    metrics.component_up.labels("joiner-1").set(1)
    metrics.step_errors.labels("joiner-1").inc(2)
    gone = down(metrics.exposition())
    assert sample_value(gone, "streamcl_component_up", {"component": "joiner-1"}) == 0
    assert sample_value(gone, "streamcl_service_step_errors_total") is None  # counters: kept by the merge
    assert sample_value(down(MetricGroup(CollectorRegistry()).exposition()), "streamcl_component_up") is None


def test_the_aggregator_reports_a_source_silent_for_30_s_as_down(monkeypatch):
    import services.metrics_server as server

    metrics = MetricGroup(CollectorRegistry())
    metrics.component_up.labels("learner").set(1)
    metrics.step_errors.labels("learner").inc(2)
    aggregator = server.MetricsAggregator(port=0)
    try:
        aggregator.push("learner", metrics.exposition(), {"model": "default"})
        up = {"component": "learner", "model": "default"}
        assert sample_value(aggregator.render(), "streamcl_component_up", up) == 1
        now = time.time()
        monkeypatch.setattr(server.time, "time", lambda: now + server.STALE_S + 1)
        text = aggregator.render()
        assert sample_value(text, "streamcl_component_up", up) == 0
        assert sample_value(text, "streamcl_service_step_errors_total", up) == 2
    finally:
        aggregator.close()
