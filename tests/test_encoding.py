"""Encodings decode to exactly what was encoded: QP body pieces, RFC 2047 header words."""

from __future__ import annotations

import binascii
from email.header import decode_header, make_header

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailer.content import rfc2047
from mailer.content.course import load_course
from mailer.content.message import EncodedSlots
from mailer.content.render import Recipient, Renderer

RENDERER = Renderer(load_course(None), postal_address="1 Example Street", base_url="https://x.org")
KEYS = [lesson.key for lesson in RENDERER.course.lessons] + ["confirm", "welcome"]
KEYS += [lesson.reminder_key for lesson in RENDERER.course.lessons if lesson.reminder]
values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300
)  # any text, control characters included (they are replaced), long lines too


@given(
    key=st.sampled_from(KEYS),
    first_name=values,
    email=values,
    url=values,
)
@settings(deadline=None)  # the first example renders a lesson (premailer)
# Found by hypothesis: a value whose encoding filled a whole 76-character line left no room
# for the soft break after it.
@example(
    key="lesson-1", first_name="", email="", url="000\x80\x80\x80\x80" + "\U00010000" * 4 + "0"
)
def test_encoded_parts_decode_to_the_personalised_text_in_lines_of_76(key, first_name, email, url):
    """Every line is CRLF-terminated and at most 76 characters; decoding gives personalise().

    The part ends with exactly one line break, however many the template ends with.
    """
    content = RENDERER.message(key)
    recipient = Recipient(first_name, email, url, url, url, first_name)
    text, html = content.personalise(recipient)
    raw, escaped = content.values(recipient)
    for slots, vals, expected in ((content.text, raw, text), (content.html, escaped, html)):
        encoded = EncodedSlots(slots).fill(vals)
        lines = encoded.split(b"\r\n")
        assert all(b"\n" not in line and len(line) <= 76 for line in lines)
        assert binascii.a2b_qp(encoded).decode("utf-8") == expected.rstrip("\r\n") + "\r\n"


@given(
    text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=400),
    used=st.integers(min_value=2, max_value=40),
)
@example(text="=?utf-8?b?QWRh?=", used=9)
@example(text="é" * 400, used=9)
@example(text="\U0001f469\u200d\U0001f469" * 50, used=30)
def test_encoded_words_are_at_most_75_characters_and_decode_to_the_text(text, used):
    """Any text folds into encoded-words of at most 75 and lines of 78, decoding to the text."""
    folded = rfc2047.fold(text, used)
    lines = folded.split("\r\n ")
    assert used + len(lines[0]) <= 78 and all(len(line) <= 77 for line in lines[1:])
    assert all(len(word) <= 75 and word.isascii() for word in lines)
    assert str(make_header(decode_header(folded))) == text
