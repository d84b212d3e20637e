"""Errors raised by the engine, all under RekindleError (see subscribers.errors)."""

import socket

from subscribers.errors import Conflict, InvalidInput, NotFound, RekindleError

EX_TEMPFAIL = 75

__all__ = [
    "EX_TEMPFAIL",
    "ConfigError",
    "Conflict",
    "CourseError",
    "DatabaseError",
    "DatabaseUnavailable",
    "InvalidInput",
    "NotFound",
    "RekindleError",
    "TemporaryError",
    "TransportUnavailable",
    "describe",
]


class ConfigError(RekindleError):
    """A configuration value is missing or wrong; the message names the key."""


class CourseError(RekindleError):
    """The course manifest or a template cannot be loaded or rendered."""


class DatabaseError(RekindleError):
    """The database cannot be reached or its schema is not the one this version needs."""


class TemporaryError(RekindleError):
    """Nothing is wrong with the request, but it cannot be done now: try again later (75)."""

    exit_code = EX_TEMPFAIL


class DatabaseUnavailable(TemporaryError):
    """The database could not be reached (restarting, network cut): try again later."""


class TransportUnavailable(TemporaryError):
    """The mail server (or outbox) cannot take mail right now; due mail keeps waiting."""


def describe(exc: BaseException) -> str:
    """A short reason for a network or protocol error, for one-line messages."""
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__
