"""Errors raised by the engine, all under RekindleError (see subscribers.errors)."""

from subscribers.errors import Conflict, InvalidInput, NotFound, RekindleError

EX_TEMPFAIL = 75

__all__ = [
    "EX_TEMPFAIL",
    "ConfigError",
    "Conflict",
    "CourseError",
    "DatabaseError",
    "InvalidInput",
    "NotFound",
    "RekindleError",
    "TransportUnavailable",
]


class ConfigError(RekindleError):
    """A configuration value is missing or wrong; the message names the key."""


class CourseError(RekindleError):
    """The course manifest or a template cannot be loaded or rendered."""


class DatabaseError(RekindleError):
    """The database cannot be reached or its schema is not the one this version needs."""


class TransportUnavailable(RekindleError):
    """The mail server (or outbox) cannot take mail right now; due mail keeps waiting."""

    exit_code = EX_TEMPFAIL
