"""Seeing inside Ghost: Prometheus metrics, OpenTelemetry traces and JSON log lines."""

from ghost.observe.telemetry import Telemetry

__all__ = ["Telemetry"]
