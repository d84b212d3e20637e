"""RFC 2047 encoded-words of at most 75 characters, each holding whole UTF-8 characters."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence

MAX_WORD = 75  # RFC 2047 §2: an encoded-word is at most 75 characters long
MAX_LINE = 78  # RFC 5322 §2.1.1: lines SHOULD stay within 78 characters
_B = "=?utf-8?b?"
_Q = "=?utf-8?q?"
_END = "?="
_FRAME = len(_B) + len(_END)
# RFC 2047 §5(3): the only characters a "Q" word may carry as themselves in a phrase.
_Q_LITERAL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_BYTE = [chr(b) if b in _Q_LITERAL else "_" if b == 0x20 else f"={b:02X}" for b in range(256)]
_Q_TABLE = dict(enumerate(_Q_BYTE))  # str.translate over the bytes read as Latin-1
_Q_PLAIN = bytes(_Q_LITERAL) + b" "  # bytes that stay one character in a "Q" word


def words(text: str, first: int = MAX_WORD, rest: int = MAX_WORD) -> list[str]:
    """`text` as encoded-words: the first at most `first` characters long, the others `rest`.

    Each word holds whole characters, so no UTF-8 sequence is split; a decoder joins
    adjacent words (the white space between them is not part of the text) back into
    exactly `text`. The shorter of the "Q" and "B" encodings is used, as Python's email
    package does; mostly-ASCII text stays readable.
    """
    whole = text.encode()
    q_size = len(whole) + 2 * len(whole.translate(None, _Q_PLAIN))
    b_size = (len(whole) + 2) // 3 * 4
    if _FRAME + min(q_size, b_size) <= min(first, MAX_WORD):  # the usual name: one word
        return [_q_word(whole) if q_size <= b_size else _b_word(whole)]
    data = [c.encode() for c in text]
    if q_size <= b_size:
        q_cost = [sum(len(_Q_BYTE[b]) for b in piece) for piece in data]
        return _pack(data, q_cost, first, rest, _q_word, lambda room: room)
    sizes = [len(piece) for piece in data]
    return _pack(data, sizes, first, rest, _b_word, lambda room: room // 4 * 3)


def fold(text: str, used: int) -> str:
    """`text` encoded for a header whose first line already holds `used` characters.

    One word per line: the first fits what is left of the first line, the others
    follow a folding space, so every line stays within 78 characters.
    """
    return "\r\n ".join(words(text, max(MAX_LINE - used, _FRAME + 12), MAX_WORD))


def _pack(
    data: Sequence[bytes],
    costs: Sequence[int],
    first: int,
    rest: int,
    make: Callable[[bytes], str],
    capacity: Callable[[int], int],
) -> list[str]:
    """Group characters greedily into words whose encoded text fits `capacity` of the room."""
    out: list[str] = []
    chunk: list[bytes] = []
    room = capacity(min(first, MAX_WORD) - _FRAME)
    spent = 0
    for piece, cost in zip(data, costs, strict=True):
        if chunk and spent + cost > room:
            out.append(make(b"".join(chunk)))
            chunk, spent = [], 0
            room = capacity(min(rest, MAX_WORD) - _FRAME)
        chunk.append(piece)
        spent += cost
    if chunk:
        out.append(make(b"".join(chunk)))
    return out


def _q_word(data: bytes) -> str:
    return _Q + data.decode("latin-1").translate(_Q_TABLE) + _END


def _b_word(data: bytes) -> str:
    return _B + base64.b64encode(data).decode("ascii") + _END
