"""Prometheus metrics of the gateway, served at ``/metrics``: requests by route and status, their
latency, and the requests in flight. A registry of its own (not the process-wide default)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ipr_gateway_requests_total", "requests answered, by route and "
                                "HTTP status", ["route", "status"], registry=self.registry)
        self.latency = Histogram(
            "ipr_gateway_request_seconds", "from a request's arrival to its answer, by route",
            ["route"], registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.in_flight = Gauge("ipr_gateway_in_flight", "chat requests waiting for their answer",
                               registry=self.registry)
