"""The Transport protocol and the outcomes a delivery attempt can have."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

if TYPE_CHECKING:
    from mailer.content.message import Outgoing


class DeliveryError(Exception):
    """A message was not delivered; `reply` is the server's answer or the reason."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class TemporaryFailure(DeliveryError):
    """4xx reply, timeout or dropped connection: the message stays due and is retried."""


class RecipientRefused(DeliveryError):
    """5xx reply to RCPT: the address does not take mail; the subscriber has bounced."""


class MessageRefused(DeliveryError):
    """5xx reply to MAIL or DATA: this message failed; the subscriber is not at fault."""


class Withdrawn(DeliveryError):
    """The run took the message back before the server could accept it.

    `lost_claim`: because its claim may have run out (else: the run is stopping).
    """

    def __init__(self, reply: str, *, lost_claim: bool = True) -> None:
        super().__init__(reply)
        self.lost_claim = lost_claim


class Transport(Protocol):
    """Delivers messages; used as a context manager so one connection serves a run.

    `send` returns on success and raises a DeliveryError for the message, or
    mailer.errors.TransportUnavailable when no message can go out now. It
    calls `gate` (if given) at the last moment before the message can be
    accepted (SMTP: before the final dot).
    """

    description: str

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def send(self, message: Outgoing, gate: Callable[[], None] | None = None) -> None: ...
