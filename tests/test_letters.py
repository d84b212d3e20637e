"""Letters a reader trusts (issue 13): every kind of message as the SMTP server received it.

Safety where it matters, a signature and a human voice, reminders of their own, email
HTML that renders everywhere (tables, dark mode, a hidden preheader, WCAG AA contrast),
plain text that wraps, and SpamAssassin's verdict with local rules only.
"""

from __future__ import annotations

import email.policy
import mailbox
import re
import shutil
import subprocess
from collections.abc import Iterator
from email import message_from_bytes
from html import unescape
from pathlib import Path

import pytest
from lxml import html as lxml_html

from clirun import run
from letterkit import (
    BASE_URL,
    FIRST,
    HELP_URL,
    KINDS,
    Letters,
    background_of,
    colour_of,
    contrast,
    deliver_every_kind,
    font_px,
    long_lines,
    style_of,
    text_elements,
)
from mailserver import MailServer

LESSONS = [f"lesson-{n}" for n in range(1, 7)]
REMINDERS = [f"reminder-{n}" for n in range(1, 7)]
SIGNATURE = ("The Rekindle team", "Letters for a relationship going through a hard time")
REPLY_INVITE = "Just hit reply: a person reads every message."
SPACER = "\u034f\u200c\xa0"  # &#847;&zwnj;&nbsp;
SPAMASSASSIN = shutil.which("spamassassin")
LETTER_LINK = re.compile(re.escape(BASE_URL) + r"/letters/[A-Za-z0-9_-]+")


@pytest.fixture(scope="module")
def letters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Letters]:
    """Every kind of message, sent once for the whole module."""
    server = MailServer().start()
    try:
        yield deliver_every_kind(tmp_path_factory.mktemp("letters"), server)
    finally:
        server.stop()


def visible(markup: str) -> str:
    """What a reader sees of an HTML part, whitespace collapsed (the preheader left out)."""
    return " ".join(t for _, t in text_elements(markup))


def words(text: str) -> str:
    return " ".join(text.replace("’", "'").split())


# --- safety where it matters --------------------------------------------------------------


def test_week_two_says_commitment_never_means_staying_unsafe_within_its_argument(letters):
    """Week 2 says commitment never means staying unsafe, in the argument, before the practice."""
    text, markup = letters.parts("lesson-2")
    body = words(text)
    practice = body.index("This week's practice")
    limit = re.search(r"never means staying where you, or anyone else, is unsafe", body)
    assert limit and limit.start() < practice
    assert body.index("assuming good intent") < limit.start()  # right after the argument
    for word in ("afraid", "control", "violence", "domestic abuse service"):
        assert word in body[limit.start() : practice], word
    assert "never means staying where you" in words(visible(markup))


def test_week_six_puts_individual_support_before_couples_counselling_where_there_is_fear(letters):
    """Week 6: with fear, control or violence, couples counselling is not the first step."""
    body = words(letters.parts("lesson-6")[0])
    exception = body.index("Where there is fear, control or violence")
    assert "couples counselling is not the first step" in body[exception:]
    assert "a domestic abuse service" in body[exception:]
    assert "for years afterwards" not in body and "changes the way they disagree" not in body


def test_week_six_safety_paragraph_stands_apart_in_both_parts(letters):
    """The safety paragraph is a bordered callout in HTML and a ruled-off block in the text."""
    text, markup = letters.parts("lesson-6")
    block = re.search(r"\n(={72})\n(.+?)\n(={72})\n", text, re.DOTALL)
    assert block, text
    inside = words(block.group(2))
    assert "local emergency services" in inside and "domestic abuse support line" in inside
    assert HELP_URL in block.group(2).splitlines()  # the configured link, on a line of its own
    assert not re.search(r"\d{3}", re.sub(r"[\s().-]", "", text.split("\n-- \n")[0]))
    root = lxml_html.document_fromstring(markup.encode())
    (cell,) = root.find_class("callout-cell")
    assert cell.tag == "td" and cell.getparent().getparent().get("role") == "presentation"
    border = style_of(cell)["border"]
    assert re.fullmatch(r"\d+px solid #[0-9a-f]{6}", border), border
    assert background_of(cell) != background_of(cell.getparent().getparent().getparent())
    assert "local emergency services" in words(cell.text_content())
    assert cell.xpath(f".//a[@href='{HELP_URL}']")


def test_week_six_ends_with_what_now_the_six_practices_to_keep(letters):
    """Week 6 ends with "What now": a short list of the six practices to keep, then thanks."""
    text, _ = letters.parts("lesson-6")
    body = text.split("\n\nWarmly,\n")[0]
    after = body.split("What now\n--------\n", 1)[1]
    kept = re.findall(r"^- (.+)$", after, re.MULTILINE)
    assert len(kept) == 6
    for theme, item in zip(
        ("sleep", "promise", "listen", "date", "time", "help"), kept, strict=True
    ):
        assert theme in item.lower(), (theme, item)
    assert after.strip().split("\n\n")[-1].startswith("Thank you")


@pytest.mark.parametrize("key", ["welcome", "lesson-1", "reminder-2", "reminder-6"])
def test_welcome_week_one_and_reminders_two_and_six_carry_a_safety_note(letters, key):
    """The welcome, week 1 and the nudges of weeks 2 and 6 name what to do when unsafe."""
    text, markup = letters.parts(key)
    for part in (words(text), words(visible(markup))):
        assert re.search(r"\bunsafe\b|\bafraid\b", part)
        assert "emergency services" in part or "domestic abuse" in part


def test_reminder_six_puts_support_for_yourself_before_couples_counselling(letters):
    """The week-6 nudge says: where there is fear, start with support for yourself."""
    body = words(letters.parts("reminder-6")[0])
    assert "fear, control or violence" in body and "support for yourself" in body


# --- a human voice --------------------------------------------------------------------------


@pytest.mark.parametrize("key", KINDS)
def test_every_letter_is_signed_in_both_parts_and_invites_replies(letters, key):
    """Every message ends with the course's signature and, with reply_to set, invites replies."""
    text, markup = letters.parts(key)
    before_footer = text.split("\n-- \n")[0]
    assert before_footer.rstrip().endswith(
        f"Warmly,\n{SIGNATURE[0]}\n{SIGNATURE[1]}\n\n{REPLY_INVITE}"
    )
    root = lxml_html.document_fromstring(markup.encode())
    (signature,) = root.find_class("signature")
    assert words(signature.text_content()) == words(f"Warmly, {' '.join(SIGNATURE)} {REPLY_INVITE}")


def test_without_reply_to_no_letter_invites_replies(env):
    """No reply_to: the signature stays, the invitation to reply goes (nobody promised to read)."""
    for args in (("preview", "3", "--text"), ("preview", "3")):
        out = run(env, *args)
        assert out.exit_code == 0, out.output
        assert SIGNATURE[0] in out.output and "hit reply" not in out.output
    with_reply = run({**env, "REKINDLE_REPLY_TO": "support@example.org"}, "preview", "3", "--text")
    assert REPLY_INVITE in with_reply.output


def test_signature_comes_from_course_toml(env, tmp_path):
    """The operator's [signature] (a name and a line) signs every part, lessons and notices."""
    course = tmp_path / "course"
    shutil.copytree(Path(__file__).resolve().parents[1] / "templates", course)
    manifest = course / "course.toml"
    text = manifest.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^name = "The Rekindle team"$', 'name = "Sam Rivera"', text)
    text = re.sub(
        r'(?m)^line = ".*"$', 'line = "Couples counsellor, and the writer of these letters"', text
    )
    manifest.write_text(text, encoding="utf-8")
    custom = {**env, "REKINDLE_COURSE_DIR": str(course)}
    for args in (("preview", "1", "--text"), ("preview", "6")):
        out = run(custom, *args)
        assert out.exit_code == 0, out.output
        assert "Sam Rivera" in out.output and "the writer of these letters" in out.output
        assert "The Rekindle team" not in out.output


def test_the_layout_no_longer_repeats_next_weeks_title(letters):
    """The prose looks ahead; no "Next week: <title>" line is added under it, in either part."""
    for key in LESSONS[:5]:
        text, markup = letters.parts(key)
        assert words(text).count("Next week") == 1, key
        assert words(visible(markup)).count("Next week") == 1, key


def test_welcome_says_when_the_first_letter_comes_in_the_readers_zone(letters):
    """The welcome names lesson 1's day and hour in the reader's own zone, and the sender."""
    text, markup = letters.parts("welcome")
    # Bea confirmed on Sunday 22:00 UTC, which is Sunday 22:00 in Lisbon: Monday's window.
    when = "Monday 2 March at 09:00 (Europe/Lisbon time)"
    assert f"arrives on\n{when}." in text
    assert when in words(visible(markup))
    assert "add hello@example.org to your contacts" in words(text)
    assert "What happens next" in text


# --- reminders are their own kind of mail ---------------------------------------------------


@pytest.mark.parametrize("week", range(1, 7))
def test_reminders_have_their_own_header_preheader_question_link_and_footer(letters, week):
    """A nudge: "Mid-week nudge · week N", its own preheader, a question, a way back, its footer."""
    key = f"reminder-{week}"
    text, markup = letters.parts(key)
    root = lxml_html.document_fromstring(markup.encode())
    assert text.startswith(f"REKINDLE · Mid-week nudge · week {week}\n")
    (kind,) = root.find_class("kind")
    assert kind.text_content() == f"Mid-week nudge · week {week}"
    assert f"Week {week} of 6" not in text and f"Week {week} of 6" not in markup
    (preheader,) = root.find_class("preheader")
    shown = preheader.text_content().replace(SPACER, "").strip()
    assert shown and shown != str(letters.message(key)["Subject"])
    body = text.split("\n\n", 2)[2].split("\n\nRead week")[0]
    assert body.count("?") == 1, body  # one gentle question
    sentences = re.findall(r"[^.?!]+[.?!]", body.split("\n\n")[0])
    assert 2 <= len(sentences) <= 3, sentences  # one or two sentences and the question
    assert "one letter a week" not in text and "one letter a week" not in markup
    again = re.search(rf"Read week {week}’s letter again:\n({LETTER_LINK.pattern})\n", text)
    assert again, text
    (link,) = root.xpath(f"//a[normalize-space()='Read week {week}’s letter again']")
    assert link.get("href") == again.group(1)
    lesson_link = LETTER_LINK.search(letters.parts(f"lesson-{week}")[0])
    assert lesson_link and again.group(1) == lesson_link.group(0)  # the week's letter itself


def test_lessons_link_to_themselves_in_the_browser_in_both_parts(letters):
    """Every lesson links to <base_url>/letters/<token>: one per lesson, the same in both parts."""
    seen = set()
    for key in LESSONS:
        text, markup = letters.parts(key)
        link = re.search(rf"Read this letter in your browser:\n({LETTER_LINK.pattern})\n", text)
        assert link, key
        assert f'href="{link.group(1)}"' in markup
        seen.add(link.group(1))
    assert len(seen) == 6


MANAGED = ("welcome", *LESSONS, *(f"reminder-{n}" for n in range(1, 7)))


def test_lessons_reminders_and_the_welcome_link_the_readers_course_page_in_both_parts(letters):
    """ "Manage your course": <base_url>/course/<token> in the footer of both parts, the same
    link in every message to one reader and another for each reader; never in the
    confirmation (not yet a reader) nor a broadcast."""
    course = re.compile(re.escape(BASE_URL) + r"/course/[A-Za-z0-9_-]{27}")
    links = {}
    for key in MANAGED:
        text, markup = letters.parts(key)
        found = re.search(rf"Manage your course \(.*\):\n({course.pattern})\n", text)
        assert found, key
        footer = markup.split('class="footer"', 1)[1]
        assert f'<a href="{found.group(1)}"' in footer and ">Manage your course</a>" in footer
        links[key] = found.group(1)
    assert links["welcome"] != links["lesson-1"]  # the welcome went to the joiner
    assert len({v for k, v in links.items() if k != "welcome"}) == 1
    for key in ("confirm", "broadcast-1"):
        assert not any(course.search(part) for part in letters.parts(key)), key


# --- the confirmation ------------------------------------------------------------------------


def test_confirmation_has_a_bulletproof_button_and_the_plain_url_and_no_unsubscribe_link(letters):
    """The confirmation: a table button and the URL to copy; "ignore this email", no unsubscribe."""
    message = letters.message("confirm")
    text, markup = letters.parts("confirm")
    url = re.search(rf"Yes, start my six weeks:\n({re.escape(BASE_URL)}/confirm/\S+)\n", text)
    assert url, text
    root = lxml_html.document_fromstring(markup.encode())
    (cell,) = root.find_class("button-cell")
    assert cell.tag == "td" and style_of(cell).get("background-color")
    assert cell.getparent().getparent().get("role") == "presentation"
    (button,) = cell.xpath(".//a")
    assert button.get("href") == url.group(1) and button.text_content() == "Yes, start my six weeks"
    assert contrast(colour_of(button), background_of(button)) >= 4.5
    plain = root.xpath(f"//a[@href='{url.group(1)}' and normalize-space()='{url.group(1)}']")
    assert len(plain) == 1  # the plain URL, for copying
    for part in (text, markup):
        assert "/unsubscribe/" not in part and "Unsubscribe" not in part
        assert "ignore this email" in part
    assert "/unsubscribe/" in str(message["List-Unsubscribe"])  # mail clients still offer it


# --- email HTML that renders everywhere ------------------------------------------------------


@pytest.mark.parametrize("key", KINDS)
def test_html_is_a_600px_table_layout_with_outlook_wrapper_lang_dir_and_dark_mode(letters, key):
    """role=presentation tables at most 600px, an [if mso] wrapper, lang/dir, colour schemes."""
    _, markup = letters.parts(key)
    root = lxml_html.document_fromstring(markup.encode())
    assert re.search(
        r'<!--\[if mso\]><table role="presentation"[^>]*width="600"[^>]*>.*?<!\[endif\]-->',
        markup,
        re.DOTALL,
    )
    assert markup.count("<!--[if mso]>") == markup.count("<![endif]-->") >= 2
    frames = root.find_class("frame")
    assert len(frames) == 1 and frames[0].tag == "table"
    assert style_of(frames[0])["max-width"] == "600px"
    for table in root.iter("table"):
        assert table.get("role") == "presentation"
    (wrapper,) = root.find_class("wrapper")
    assert (wrapper.get("lang"), wrapper.get("dir")) == ("en", "ltr")
    metas = {m.get("name"): m.get("content") for m in root.iter("meta")}
    assert metas["color-scheme"] == "light dark"
    assert metas["supported-color-schemes"] == "light dark"
    style = "".join(s.text or "" for s in root.iter("style"))
    assert re.search(r":root\s*\{[^}]*color-scheme:\s*light dark", style)
    assert "@media (prefers-color-scheme: dark)" in style
    assert f"<title>{letters.message(key)['Subject']!s}" in unescape(markup)


@pytest.mark.parametrize("key", KINDS)
def test_preheader_is_hidden_everywhere_not_background_coloured_and_padded(letters, key):
    """The preheader hides (display/max-height/overflow/mso-hide), in text colour, then spacers."""
    _, markup = letters.parts(key)
    root = lxml_html.document_fromstring(markup.encode())
    found = root.find_class("preheader")
    if key.startswith("broadcast"):
        assert not found  # a broadcast has no preheader of its own
        return
    (preheader,) = found
    style = style_of(preheader)
    assert style["display"] == "none" and style["max-height"] == "0"
    assert style["overflow"] == "hidden" and style["mso-hide"] == "all"
    colour, page = style["color"], background_of(preheader)
    assert contrast(colour, page) >= 4.5, (colour, page)  # SpamAssassin: HTML_FONT_LOW_CONTRAST
    text = preheader.text_content()
    assert text.endswith(SPACER * 40)
    assert text.replace(SPACER, "").strip()


@pytest.mark.parametrize("key", KINDS)
def test_every_visible_text_colour_is_at_least_4_5_to_1_against_its_background(letters, key):
    """WCAG AA: each visible run of text, colour and background resolved through its ancestors."""
    _, markup = letters.parts(key)
    runs = text_elements(markup)
    assert len(runs) > 8
    low = [
        (
            text[:40],
            colour_of(el),
            background_of(el),
            round(contrast(colour_of(el), background_of(el)), 2),
        )
        for el, text in runs
        if contrast(colour_of(el), background_of(el)) < 4.5
    ]
    assert low == []


@pytest.mark.parametrize("key", KINDS)
def test_footer_text_is_at_least_13px(letters, key):
    """Every line of the footer is set at 13px or more."""
    _, markup = letters.parts(key)
    root = lxml_html.document_fromstring(markup.encode())
    (footer,) = root.find_class("footer")
    sizes = {el.tag: font_px(el) for el in footer.iter() if isinstance(el.tag, str)}
    assert len(sizes) >= 2 and min(sizes.values()) >= 13, sizes


# --- plain text ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", KINDS)
def test_plain_text_wraps_at_72_with_only_urls_longer_and_ends_with_a_newline(letters, key):
    """No line over 72 characters (78 is the limit) unless it is only a URL; a final newline."""
    text, _ = letters.parts(key)
    assert long_lines(text, 72) == []
    assert text.endswith("\n") and not text.endswith("\n\n\n")
    urls = re.findall(r"https?://\S+", text)
    for url in urls:
        line = next(line for line in text.split("\n") if url in line)
        if len(line) > 72:
            assert line.strip().strip("<>.") == url.strip("<>."), line


# --- headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KINDS)
def test_every_encoded_word_in_every_header_is_at_most_75_characters(letters, key):
    """RFC 2047: a long name in several scripts still gives encoded-words of 75 or fewer."""
    raw = letters.received[key].data
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    encoded = re.findall(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=", head)
    if key not in ("confirm", "welcome"):
        assert encoded, head  # the reader's name is not ASCII
    assert all(len(word) <= 75 for word in encoded), [w for w in encoded if len(w) > 75]
    to = message_from_bytes(raw, policy=email.policy.default)["To"]
    if key != "confirm" and key != "welcome":
        assert FIRST in str(to)


# --- SpamAssassin ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spam_verdicts(letters, tmp_path_factory) -> dict[str, tuple[float, list[str]]]:
    """`spamassassin -L -t` (local rules only) over every kind at once: key -> (score, rules)."""
    if SPAMASSASSIN is None:
        pytest.skip("spamassassin is not installed (apt-get install spamassassin)")
    folder = tmp_path_factory.mktemp("spamassassin")
    box = mailbox.mbox(folder / "in.mbox")
    for key in KINDS:
        box.add(mailbox.mboxMessage(letters.received[key].data))
    box.flush()
    box.close()
    with (folder / "in.mbox").open("rb") as source:
        done = subprocess.run(
            [SPAMASSASSIN, "-L", "-t", "--mbox"],
            stdin=source,
            capture_output=True,
            env={"HOME": str(folder), "PATH": "/usr/bin:/bin"},
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    (folder / "out.mbox").write_bytes(done.stdout)
    verdicts = {}
    checked = mailbox.mbox(folder / "out.mbox", create=False)
    try:
        for verdict in checked:
            status = " ".join(str(verdict["X-Spam-Status"]).split())
            score = float(re.search(r"score=(-?[\d.]+)", status).group(1))
            rules = re.search(r"tests=(\S*)", status).group(1).split(",")
            verdicts[str(verdict["X-Rekindle-Key"])] = (score, [r for r in rules if r])
    finally:
        checked.close()
    assert set(verdicts) == set(KINDS)
    return verdicts


@pytest.mark.parametrize("key", KINDS)
def test_spamassassin_scores_every_kind_at_most_0_1_with_no_html_rule(spam_verdicts, key):
    """SpamAssassin 4, local rules: at most 0.1 points, and no HTML_* rule but HTML_MESSAGE.

    HTML_MESSAGE only says the message has an HTML part; it scores 0.001.
    """
    score, rules = spam_verdicts[key]
    assert score <= 0.1, (score, rules)
    assert [r for r in rules if r.startswith("HTML_") and r != "HTML_MESSAGE"] == []


@pytest.mark.parametrize("key", KINDS)
def test_letters_use_typographic_apostrophes_throughout(letters, key):
    """Layout, titles and footers say "it’s" as the lessons do, in both parts."""
    text, markup = letters.parts(key)
    for part in (text, visible(markup)):
        assert not re.search(r"[A-Za-z]'[A-Za-z]", part), re.findall(r"\w+'\w+", part)


def _course_with(tmp_path: Path, *changes: tuple[str, str]) -> Path:
    """A copy of the shipped course with pieces of course.toml replaced (old, new)."""
    course = tmp_path / "course"
    shutil.copytree(Path(__file__).resolve().parents[1] / "templates", course)
    manifest = course / "course.toml"
    text = manifest.read_text(encoding="utf-8")
    for old, new in changes:
        assert old in text
        text = text.replace(old, new, 1)
    manifest.write_text(text, encoding="utf-8")
    return course


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ('name = "The Rekindle team"', 'name = ""', "[signature]"),
        ('direction = "ltr"', 'direction = "sideways"', "direction"),
        ('language = "en"', 'language = "en\\" onload=\\"x"', "language"),
        ('reminder_preheader = "Your sleep', 'reminder_note = "Your sleep', "reminder_preheader"),
    ],
)
def test_course_check_names_a_bad_signature_language_direction_or_preheader(
    env, tmp_path, old, new, named
):
    """A manifest with a nameless signature, odd lang/dir, or a nudge without preheader: exit 1."""
    broken = {**env, "REKINDLE_COURSE_DIR": str(_course_with(tmp_path, (old, new)))}
    done = run(broken, "course", "check")
    assert done.exit_code == 1
    assert named in done.output and "course.toml" in done.output


def test_a_right_to_left_course_says_so_on_the_content_wrapper(env, tmp_path):
    """direction = "rtl" and another language reach <html> and the content wrapper."""
    course = _course_with(
        tmp_path, ('language = "en"', 'language = "fa"'), ('direction = "ltr"', 'direction = "rtl"')
    )
    out = run({**env, "REKINDLE_COURSE_DIR": str(course)}, "preview", "2")
    assert out.exit_code == 0, out.output
    root = lxml_html.document_fromstring(out.output.encode())
    (wrapper,) = root.find_class("wrapper")
    assert (wrapper.get("lang"), wrapper.get("dir")) == ("fa", "rtl")
    assert (root.get("lang"), root.get("dir")) == ("fa", "rtl")
