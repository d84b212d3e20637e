"""The course (README, "Writing the course"): manifest, lessons, one source, errors."""

from __future__ import annotations

import email
import email.policy
import html
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from premailer import Premailer

from clirun import run, script
from mailer.content.course import default_course_dir, load_course
from mailer.content.render import Recipient, Renderer
from mailer.runtime import Runtime

TITLES = [
    "Heal yourself first",
    "Stay committed",
    "Communicate",
    "Have regular dates",
    "Give space when it’s needed",
    "Seek professional help",
]
# Words that name the theme of the following week, for each lesson's closing look-ahead.
NEXT_THEME = {
    1: ("commit",),
    2: ("talk", "listen", "communicat"),
    3: ("date",),
    4: ("space", "room"),
    5: ("help", "counsel", "therap"),
}
SELLING = re.compile(
    r"\b(programmes?|programs?|buy|purchase|products?|discount|coupon|sponsor\w*|affiliate|"
    r"promo\w*|free trial|order now|apps?)\b|[$€£™®]",
    re.IGNORECASE,
)
SAMPLE = Recipient("Alex", "alex@example.org", "https://rekindle.example.org/unsubscribe/sample")
SIGN_OFF = "Warmly,"  # the layout's sign-off, then the course's signature
CALLOUT_RULE = "=" * 72  # above and below a callout in the text part
NOW = "2026-03-02T10:00:00+00:00"


def normal(text: str) -> str:
    """Typographic quotes made plain and all whitespace runs made one space."""
    for curly, plain in (("‘", "'"), ("’", "'"), ("“", '"'), ("”", '"'), ("\xa0", " ")):
        text = text.replace(curly, plain)
    return " ".join(text.split())


def body_paragraphs(text: str, week: int) -> list[str]:
    """The lesson body of a text part, paragraph by paragraph (no greeting, signature, footer)."""
    body = text.split("Hi Alex,\n\n", 1)[1].split(f"\n\n{SIGN_OFF}\n", 1)[0]
    return [p for p in body.split("\n\n") if p.strip()]


def html_text(markup: str) -> str:
    """What a reader sees of an HTML part: tags dropped, entities decoded, normalised."""
    return normal(html.unescape(re.sub(r"<[^>]+>", "", markup)))


def practice_steps(paragraphs: list[str]) -> list[str]:
    """The numbers of the top-level steps under the "This week's practice" heading."""
    heading = [i for i, p in enumerate(paragraphs) if normal(p).startswith("This week's practice")]
    assert len(heading) == 1, "one 'This week's practice' section"
    after = "\n".join(paragraphs[heading[0] + 1 :])
    return re.findall(r"^(\d+)\. ", after, flags=re.MULTILINE)


@pytest.fixture(scope="module")
def lessons() -> dict[int, tuple[str, str]]:
    """Every shipped lesson rendered once: week -> (text, html)."""
    renderer = Renderer(load_course(), base_url="https://rekindle.example.org")
    out = {}
    for week in range(1, 7):
        text, markup = renderer.lesson(week).personalise(SAMPLE)
        out[week] = (text.replace("\r\n", "\n"), markup.replace("\r\n", "\n"))
    return out


# --- the shipped course -----------------------------------------------------------------------


def test_course_check_passes_on_the_shipped_course(env):
    """`course check` renders all six shipped lessons and exits 0 with no warnings."""
    done = script(env, "course", "check")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("course OK: 6 lessons")


def test_course_list_names_the_six_lessons_in_order(env):
    """`course list --json` gives lesson-1..lesson-6 with the six tips as titles, in order."""
    result = run(env, "course", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["week"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["key"] for r in rows] == [f"lesson-{n}" for n in range(1, 7)]
    assert [r["title"] for r in rows] == TITLES
    assert all(r["subject"] and r["preheader"] and r["source"] for r in rows)

    table = run(env, "course", "list")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert len(lines) == 7  # header + six lessons
    for n, (line, row) in enumerate(zip(lines[1:], rows, strict=True), start=1):
        assert line.split()[:2] == [str(n), f"lesson-{n}"]
        assert row["subject"] in line


@pytest.mark.parametrize("week", range(1, 7))
def test_lesson_length_is_250_to_450_words(lessons, week):
    """Each lesson body has 250-450 words, and `words` counts the body, not the layout."""
    words = Renderer(load_course()).lesson(week).words
    assert 250 <= words <= 450
    assert words == len(" ".join(body_paragraphs(lessons[week][0], week)).split())


@pytest.mark.parametrize("week", range(1, 7))
def test_lesson_ends_with_a_practice_of_two_or_three_steps(lessons, week):
    """Each lesson has a "This week's practice" section with two or three numbered steps."""
    paragraphs = body_paragraphs(lessons[week][0], week)
    steps = practice_steps(paragraphs)
    assert steps in (["1", "2"], ["1", "2", "3"])


@pytest.mark.parametrize("week", range(1, 6))
def test_lessons_one_to_five_close_with_next_weeks_theme(lessons, week):
    """Lessons 1-5 end with a line of their own that looks ahead to next week's theme."""
    last = normal(body_paragraphs(lessons[week][0], week)[-1]).lower()
    assert last.startswith("next week")
    assert any(word in last for word in NEXT_THEME[week]), last


def test_lesson_six_points_to_emergency_services_without_phone_numbers(lessons):
    """Lesson 6 tells unsafe readers to contact local emergency services, with no phone number."""
    paragraphs = body_paragraphs(lessons[6][0], 6)
    body = normal(" ".join(paragraphs))
    assert re.search(r"\bunsafe\b", body)
    assert re.search(r"local emergency services", body)
    assert not re.search(r"\d{3}", re.sub(r"\s|[-().]", "", body)), "no phone numbers"
    assert not normal(paragraphs[-1]).lower().startswith("next week")
    assert "Next week" not in lessons[6][0]


@pytest.mark.parametrize("week", range(1, 6))
def test_only_the_prose_looks_ahead_to_next_week(lessons, week):
    """The layout adds no "Next week:" line: each part names next week once, in the prose."""
    text, markup = lessons[week]
    assert normal(text).count("Next week") == 1
    assert html_text(markup).count("Next week") == 1


@pytest.mark.parametrize("week", range(1, 7))
def test_no_lesson_plugs_a_product(lessons, week):
    """No lesson, subject or preheader sells or names a commercial product or programme."""
    lesson = load_course().lesson(week)
    body = " ".join(body_paragraphs(lessons[week][0], week))
    for text in (body, lesson.subject, lesson.preheader):
        assert not SELLING.search(text), SELLING.search(text)


def test_help_url_appears_in_lesson_six_only_when_configured(env):
    """REKINDLE_HELP_URL is linked from lesson 6 (both parts); without it, no trace of it."""
    url = "https://help.example.net/find-support"
    with_url = {**env, "REKINDLE_HELP_URL": url}
    text = run(with_url, "preview", "6", "--text")
    markup = run(with_url, "preview", "6")
    assert text.exit_code == 0 and markup.exit_code == 0
    assert url in text.output
    assert f'href="{url}"' in markup.output
    for week in range(1, 6):
        assert url not in run(with_url, "preview", str(week), "--text").output

    plain = run(env, "preview", "6", "--text")
    assert plain.exit_code == 0
    assert "help.example.net" not in plain.output
    assert "support services here" not in plain.output
    assert "support services here" not in run(env, "preview", "6").output


@pytest.mark.parametrize("week", range(1, 7))
def test_text_and_html_parts_carry_the_same_sentences(lessons, week):
    """One source per lesson: every paragraph of the text part reads the same in the HTML."""
    text, markup = lessons[week]
    seen = html_text(markup)
    pieces = []
    for paragraph in body_paragraphs(text, week):
        lines = [ln for ln in paragraph.strip().splitlines() if ln != CALLOUT_RULE]
        if re.fullmatch(r"[-=]+", lines[-1]):  # an underlined heading
            lines = lines[:-1]
        items = re.split(r"^\s*(?:\d+\.|-) ", "\n".join(lines), flags=re.MULTILINE)
        pieces += [normal(item) for item in items if normal(item)]
    assert len(pieces) >= 8
    for piece in pieces:
        assert piece in seen, piece
    # And the HTML body has nothing the text part lacks: the same words, in the same order.
    content = markup.split('class="content"', 1)[1].split(">", 1)[1].split("\n</div>", 1)[0]
    assert html_text(content) == normal(" ".join(["Hi Alex,", *pieces]))


def test_premailer_runs_once_per_lesson_not_per_recipient(env, monkeypatch):
    """Composing lesson 1 for 40 recipients inlines CSS once; lesson 2 adds one more."""
    calls = []
    transform = Premailer.transform

    def counting(self, *args, **kwargs):
        calls.append(1)
        return transform(self, *args, **kwargs)

    monkeypatch.setattr(Premailer, "transform", counting)
    rt = Runtime(env=env)
    with rt.session() as session:
        composer = rt.composer(session)
    names = [f"Reader{i} Example" for i in range(40)]
    messages = [
        composer.lesson(
            1,
            subscriber_id=i + 1,
            email=f"reader{i}@example.org",
            name=name,
            date=rt.now(NOW),
        )
        for i, name in enumerate(names)
    ]
    assert len(calls) == 1
    unsubscribe_links = set()
    for i, message in enumerate(messages):
        parsed = email.message_from_bytes(message.data, policy=email.policy.default)
        text = parsed.get_body(("plain",)).get_content()
        markup = parsed.get_body(("html",)).get_content()
        assert f"Hi Reader{i}," in text and f"Hi Reader{i}," in markup
        assert re.search(r'<p style="[^"]+">Hi Reader', markup)  # CSS inlined
        links = re.findall(r'href="([^"]*/unsubscribe/[^"]+)"', markup)
        assert len(links) == 1 and links[0] in text
        unsubscribe_links.add(links[0])
    assert len(unsubscribe_links) == 40
    composer.lesson(2, subscriber_id=1, email="reader0@example.org", name="R", date=rt.now(NOW))
    composer.lesson(2, subscriber_id=2, email="reader1@example.org", name="S", date=rt.now(NOW))
    assert len(calls) == 2


def test_send_run_inlines_css_once_for_many_subscribers(env, smtp_server, monkeypatch, tmp_path):
    """A `send` run delivering lesson 1 to 25 subscribers calls premailer exactly once."""
    calls = []
    transform = Premailer.transform

    def counting(self, *args, **kwargs):
        calls.append(1)
        return transform(self, *args, **kwargs)

    csv = tmp_path / "people.csv"
    csv.write_text(
        "email,name,timezone\n"
        + "".join(f"p{i}@example.org,Person {i},Europe/London\n" for i in range(25)),
        encoding="utf-8",
    )
    added = run(
        {**env, "REKINDLE_NOW": "2026-03-01T08:00:00+00:00"}, "subscribers", "import", str(csv)
    )
    assert added.exit_code == 0, added.output
    monkeypatch.setattr(Premailer, "transform", counting)
    sent = run({**env, "REKINDLE_SMTP_URL": smtp_server.url}, "send", "--now", NOW, "--json")
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.output)["sent"] == 25
    assert len(calls) == 1
    assert len(smtp_server.messages) == 25
    assert {m.message["X-Rekindle-Key"] for m in smtp_server.messages} == {"lesson-1"}


def test_subscriber_and_operator_text_is_escaped_in_html(env):
    """Jinja autoescape is on in the HTML layout: a postal address with <b> shows as text."""
    hostile = {**env, "REKINDLE_POSTAL_ADDRESS": "Rekindle <b>Bold</b> & Co, 1 Street"}
    markup = run(hostile, "preview", "1")
    assert markup.exit_code == 0, markup.output
    assert "<b>Bold</b>" not in markup.output
    assert "Rekindle &lt;b&gt;Bold&lt;/b&gt; &amp; Co, 1 Street" in markup.output
    text = run(hostile, "preview", "1", "--text")
    assert "Rekindle <b>Bold</b> & Co, 1 Street" in text.output


# --- preview ----------------------------------------------------------------------------------


def test_preview_gives_html_by_default_and_text_on_request(env):
    """`preview 3` prints the HTML part; `--text` prints the text part of the same lesson."""
    markup = run(env, "preview", "3")
    assert markup.exit_code == 0, markup.output
    assert markup.output.startswith("<!DOCTYPE html>")
    assert "Week 3 of 6" in markup.output and "<title>Week 3: " in markup.output
    assert "\r" not in markup.output
    text = run(env, "preview", "3", "--text")
    assert text.exit_code == 0, text.output
    assert text.output.startswith("REKINDLE · Week 3 of 6 · Communicate\n")
    assert "<" not in text.output.split("Unsubscribe")[0]
    assert "Hi Alex," in text.output
    assert "https://rekindle.example.org/unsubscribe/" in text.output


def test_preview_writes_a_file_with_o(env, tmp_path):
    """`preview 2 -o FILE` writes the HTML to FILE, prints nothing on stdout, says so on stderr."""
    target = tmp_path / "week2.html"
    done = script(env, "preview", "2", "-o", str(target))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert str(target) in done.stderr
    written = target.read_text(encoding="utf-8")
    assert written.startswith("<!DOCTYPE html>") and "Week 2 of 6" in written
    assert written == run(env, "preview", "2").output

    text_file = tmp_path / "week2.txt"
    assert run(env, "preview", "2", "--text", "-o", str(text_file)).exit_code == 0
    assert text_file.read_text(encoding="utf-8") == run(env, "preview", "2", "--text").output


@pytest.mark.parametrize("week", ["0", "7"])
def test_preview_outside_the_course_is_no_lesson(env, week):
    """`preview 0` and `preview 7` exit 1 with a one-line 'no lesson' error, no traceback."""
    done = script(env, "preview", week)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"no lesson {week}" in done.stderr


# --- broken course content ----------------------------------------------------------------------

LESSON_ONE = "lessons/01-heal-yourself-first.md"


def _edit_line(path: Path, number: int, suffix: str) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[number - 1] += suffix
    path.write_text("\n".join(lines), encoding="utf-8")


def _syntax_error(course: Path) -> None:
    _edit_line(course / LESSON_ONE, 3, " {% if %}")


def _undefined(course: Path) -> None:
    _edit_line(course / LESSON_ONE, 5, " Dear {{ nickname }}.")


def _missing_source(course: Path) -> None:
    (course / LESSON_ONE).unlink()


def _line_of(text: str, path: Path) -> int:
    content = path.read_text(encoding="utf-8")
    return content[: content.index(text)].count("\n") + 1


TITLE_LINE = _line_of('title = "Rekindle"', default_course_dir() / "course.toml")


def _toml_error(course: Path) -> None:
    manifest = course / "course.toml"
    manifest.write_text(
        manifest.read_text(encoding="utf-8").replace('title = "Rekindle"', 'title = "Rekindle'),
        encoding="utf-8",
    )


def _wrong_key(course: Path) -> None:
    manifest = course / "course.toml"
    manifest.write_text(
        manifest.read_text(encoding="utf-8").replace('key = "lesson-2"', 'key = "lesson-two"'),
        encoding="utf-8",
    )


def _no_lessons(course: Path) -> None:
    manifest = course / "course.toml"
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text[: text.index("[[lessons]]")], encoding="utf-8")


BREAKAGES = {
    "jinja-syntax-error": (_syntax_error, ["01-heal-yourself-first.md", "line 3"]),
    "undefined-variable": (_undefined, ["01-heal-yourself-first.md", "'nickname'", "undefined"]),
    "missing-source": (_missing_source, ["01-heal-yourself-first.md", "does not exist"]),
    "toml-syntax-error": (_toml_error, ["course.toml", f"line {TITLE_LINE}"]),
    "wrong-key": (_wrong_key, ["course.toml", "lesson 2", "'lesson-two'"]),
    "no-lessons": (_no_lessons, ["course.toml", "[[lessons]]"]),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_course_fails_every_command_with_one_clear_line(
    env, smtp_server, tmp_path, breakage
):
    """check, preview and send exit 1 with one line naming the fault; nothing is sent."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    added = run(
        {**env, "REKINDLE_NOW": "2026-03-01T08:00:00+00:00"},
        "subscribers", "add", "ada@example.org", "--name", "Ada",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    course = tmp_path / "course"
    shutil.copytree(default_course_dir(), course)
    spoil, fragments = BREAKAGES[breakage]
    spoil(course)
    broken = {**env, "REKINDLE_COURSE_DIR": str(course)}
    commands = [("course", "check"), ("preview", "1"), ("send", "--now", NOW)]
    with ThreadPoolExecutor(len(commands)) as pool:
        results = list(pool.map(lambda args: script(broken, *args), commands))
    for args, done in zip(commands, results, strict=True):
        where = " ".join(args)
        assert done.returncode == 1, (where, done.stdout, done.stderr)
        assert done.stdout == "", where
        assert "Traceback" not in done.stderr, where
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (where, done.stderr)
        for fragment in fragments:
            assert fragment in lines[0], (where, fragment, lines[0])

    listed = json.loads(run(env, "subscribers", "list", "--json").output)
    assert [(r["lessons_sent"], r["next_lesson"]) for r in listed] == [(0, 1)]
    assert json.loads(run(env, "status", "--now", NOW, "--json").output)["deliveries"] == {}
    assert smtp_server.messages == []
    # The lesson really was due: with the course repaired the same run sends it.
    repaired = run(env, "send", "--now", NOW, "--json")
    assert repaired.exit_code == 0, repaired.output
    assert json.loads(repaired.output)["sent"] == 1
    assert smtp_server.keys("ada@example.org") == ["lesson-1"]
