"""The sink's errors: each carries the HTTP status a client gets and a message that says
what was expected."""

from __future__ import annotations


class PredictionLogError(Exception):
    """Base of the sink's errors."""

    status = 500


class ConfigError(PredictionLogError):
    """A setting is missing or invalid (exit code 2)."""


class InvalidEvent(PredictionLogError):
    """The POSTed CloudEvent cannot be stored: nothing of it is."""

    status = 400


class EventTooLarge(InvalidEvent):
    status = 413


class InvalidQuery(PredictionLogError):
    """A bad parameter of `GET /predictions`."""

    status = 400


class StoreUnavailable(PredictionLogError):
    """The database did not take the write (down, or the sink is shutting down)."""

    status = 503


class Busy(StoreUnavailable):
    """More events are waiting for the database than the sink holds in memory."""
