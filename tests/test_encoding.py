"""Quoted-printable parts built from pieces encoded once decode to exactly the personalised text."""

from __future__ import annotations

import binascii

from hypothesis import given
from hypothesis import strategies as st

from mailer.course import load_course
from mailer.message import EncodedSlots
from mailer.render import Recipient, Renderer

RENDERER = Renderer(load_course(None), postal_address="1 Example Street", base_url="https://x.org")
KEYS = [lesson.key for lesson in RENDERER.course.lessons] + ["confirm", "welcome"]
values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300
)  # any text, control characters included (they are replaced), long lines too


@given(
    key=st.sampled_from(KEYS),
    first_name=values,
    email=values,
    url=values,
)
def test_encoded_parts_decode_to_the_personalised_text_in_lines_of_76(key, first_name, email, url):
    """Every line is CRLF-terminated and at most 76 characters; decoding gives personalise()."""
    content = RENDERER.message(key)
    recipient = Recipient(first_name, email, url, url)
    text, html = content.personalise(recipient)
    raw, escaped = content.values(recipient)
    for slots, vals, expected in ((content.text, raw, text), (content.html, escaped, html)):
        encoded = EncodedSlots(slots).fill(vals)
        lines = encoded.split(b"\r\n")
        assert all(b"\n" not in line and len(line) <= 76 for line in lines)
        assert binascii.a2b_qp(encoded).decode("utf-8") == expected.rstrip("\r\n")
