"""Error classes shared by every layer; the CLI turns them into one-line messages."""


class RekindleError(Exception):
    """Base class of every error a user can see; `exit_code` is what the CLI exits with."""

    exit_code = 1


class InvalidInput(RekindleError):
    """A value given by the user (address, name, time zone, file) cannot be used."""


class NotFound(RekindleError):
    """The named subscriber, lesson or record does not exist."""


class Conflict(RekindleError):
    """The request contradicts the current state (already subscribed, not paused, ...)."""
