"""`rekindle-mail daemon`: the scheduler loop driven by hand, and real runs stopped by signals."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from clirun import SCRIPT, add, listed, run
from mailer.content.course import default_course_dir
from mailer.daemon import MAX_BACKOFF, SendLoop
from mailer.errors import CourseError, TemporaryError
from mailer.runtime import Runtime
from mailer.send.report import SendReport
from mailserver import MailServer, free_port

# A Monday; every subscriber is in UTC, so lesson 1 is due at 09:00 that morning.
ADDED = "2026-03-02T08:00:00+00:00"
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
PEOPLE = ("ada@example.org", "bob@example.org", "cy@example.org")
WAIT = 30.0  # seconds to wait for a subprocess to show something before failing


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def tick_due(loop: SendLoop) -> None:
    """Make the loop's job due and let the scheduler run it (no sleeping)."""
    loop.job.next_run = datetime.now() - timedelta(seconds=1)
    loop.scheduler.run_pending()


@pytest.fixture
def daemon_log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Any:
    """caplog on 'rekindle.daemon' even after an in-process command routed 'rekindle' to stderr."""
    monkeypatch.setattr(logging.getLogger("rekindle"), "propagate", True)
    monkeypatch.setattr(logging.getLogger("rekindle"), "handlers", [])
    caplog.set_level(logging.INFO, logger="rekindle.daemon")
    return caplog


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """(level, message) of every daemon log record so far."""
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "rekindle.daemon"]


@pytest.fixture
def people(env: dict[str, str]) -> dict[str, str]:
    """`env` with three UTC subscribers added before lesson 1 is due."""
    for address in PEOPLE:
        add(env, address, now=ADDED)
    return env


@pytest.fixture
def runtime(people: dict[str, str], smtp_server: MailServer) -> Iterator[Runtime]:
    """A Runtime sending to the test SMTP server, closed afterwards."""
    rt = Runtime(env={**people, "REKINDLE_SMTP_URL": smtp_server.url})
    yield rt
    rt.close()


def real_tick(rt: Runtime, calls: list[int] | None = None) -> Callable[..., SendReport]:
    """The daemon's tick: one `send` run at NOW (counted in `calls` when given)."""

    def tick(stop: Callable[[], bool]) -> SendReport:
        if calls is not None:
            calls.append(1)
        return rt.send_run(NOW, stop=stop)

    return tick


def assert_each_got_lesson_1_once(server: MailServer, people: tuple[str, ...] = PEOPLE) -> None:
    for address in people:
        assert server.lessons(address) == ["lesson-1"], address
        keys = server.keys(address)
        assert len(keys) == len(set(keys)), (address, keys)


# --- the loop with a stand-in tick -------------------------------------------------------


def test_job_waits_for_the_interval(daemon_log: Any) -> None:
    """A freshly built loop runs no tick before its interval has passed."""
    calls: list[int] = []
    loop = SendLoop(lambda stop: calls.append(1) or SendReport(), 300, clock=Clock())
    loop.scheduler.run_pending()
    assert calls == []
    tick_due(loop)
    assert calls == [1]


def test_idle_tick_logs_nothing(daemon_log: Any) -> None:
    """A tick that sent, failed and deferred nothing writes no log line."""
    loop = SendLoop(lambda stop: SendReport(waiting=2), 60, clock=Clock())
    for _ in range(3):
        tick_due(loop)
    assert lines(daemon_log) == []


def test_working_tick_logs_one_summary_line(daemon_log: Any) -> None:
    """A tick that did work logs exactly one line: the run's summary."""
    loop = SendLoop(lambda stop: SendReport(sent=2, deferred=1), 60, clock=Clock())
    tick_due(loop)
    assert lines(daemon_log) == [("INFO", "sent 2, failed 0, deferred 1")]


def test_temporary_failures_back_off_doubling_up_to_the_cap(daemon_log: Any) -> None:
    """Each failing tick doubles the pause before the next try, capped at MAX_BACKOFF."""
    clock = Clock()
    calls: list[float] = []

    def tick(stop: Callable[[], bool]) -> SendReport:
        calls.append(clock.t)
        raise TemporaryError("relay down")

    loop = SendLoop(tick, 60, clock=clock)
    start = clock.t
    expected_pauses = [120, 240, 480, 960, 1800, 1800]
    for pause in expected_pauses:
        tick_due(loop)  # runs and fails
        assert loop.resume_at == clock.t + pause
        clock.t += pause - 1
        tick_due(loop)  # still backing off: skipped
        clock.t += 1
    assert MAX_BACKOFF == 1800
    attempts = [start + sum(expected_pauses[:i]) for i in range(len(expected_pauses))]
    assert calls == attempts
    warnings = [m for level, m in lines(daemon_log) if level == "WARNING"]
    assert warnings == [f"send failed, retrying in {p}s: relay down" for p in expected_pauses]


def test_run_ticks_at_once_and_returns_when_stopped(daemon_log: Any) -> None:
    """run() ticks immediately and returns once stop() was called, logging 'stopped'."""
    calls: list[int] = []

    def tick(stop: Callable[[], bool]) -> SendReport:
        calls.append(1)
        loop.stop()
        assert stop() is True
        return SendReport()

    loop = SendLoop(tick, 300, clock=Clock())
    loop.run()
    assert calls == [1]
    assert lines(daemon_log)[-1] == ("INFO", "stopped")
    tick_due(loop)  # a stopped loop sends nothing more
    assert calls == [1]


# --- the loop with the real send run ----------------------------------------------------


def test_tick_sends_due_lessons_and_records_the_run(
    runtime: Runtime, smtp_server: MailServer, people: dict[str, str], daemon_log: Any
) -> None:
    """A due tick delivers each due lesson once; later ticks send nothing and log nothing."""
    loop = SendLoop(real_tick(runtime), 60, clock=Clock())
    tick_due(loop)
    assert_each_got_lesson_1_once(smtp_server)
    assert lines(daemon_log) == [("INFO", "sent 3, failed 0, deferred 0")]
    for _ in range(3):
        tick_due(loop)
    assert len(smtp_server.messages) == 3
    assert lines(daemon_log) == [("INFO", "sent 3, failed 0, deferred 0")]
    status = json.loads(run(people, "status", "--now", NOW.isoformat(), "--json").stdout)
    assert status["last_run"]["outcome"] == "ok"
    assert status["last_run"]["sent"] == 0
    assert {row["lessons_sent"] for row in listed(people).values()} == {1}


def test_smtp_down_backs_off_then_recovers(
    people: dict[str, str], daemon_log: Any, tmp_path: Path
) -> None:
    """With the server down ticks fail, back off and go on; once it is up the lessons go out."""
    server = MailServer()  # its port is chosen but nobody listens yet
    rt = Runtime(env={**people, "REKINDLE_SMTP_URL": server.url})
    clock = Clock()
    calls: list[int] = []
    loop = SendLoop(real_tick(rt, calls), 10, clock=clock)
    try:
        tick_due(loop)
        assert len(calls) == 1
        assert loop.resume_at == clock.t + 20
        tick_due(loop)  # backing off: not even tried
        assert len(calls) == 1
        clock.t += 20
        tick_due(loop)
        assert len(calls) == 2
        assert loop.resume_at == clock.t + 40
        record = lines(daemon_log)
        assert [level for level, _ in record] == ["WARNING", "WARNING"]
        assert record[0][1].startswith("send failed, retrying in 20s: cannot connect to ")
        assert str(server.port) in record[0][1]
        assert record[1][1].startswith("send failed, retrying in 40s: ")
        status = json.loads(run(people, "status", "--now", NOW.isoformat(), "--json").stdout)
        assert status["last_run"]["outcome"] == "unavailable"
        assert {row["lessons_sent"] for row in listed(people).values()} == {0}

        server.start()
        clock.t += 39
        tick_due(loop)  # the back-off still holds even though the server is back
        assert len(calls) == 2
        assert server.messages == []
        clock.t += 1
        tick_due(loop)
        assert_each_got_lesson_1_once(server)
        tick_due(loop)
        tick_due(loop)
        assert len(server.messages) == 3
        assert lines(daemon_log)[2:] == [
            ("INFO", "send works again after 2 failed tick(s)"),
            ("INFO", "sent 3, failed 0, deferred 0"),
        ]
        assert loop.failures == 0
    finally:
        rt.close()
        server.stop()


def test_permanent_error_is_logged_every_tick_and_the_loop_goes_on(
    people: dict[str, str], smtp_server: MailServer, daemon_log: Any, tmp_path: Path
) -> None:
    """A broken course is logged as an error on every tick, without back-off; fixed, mail flows."""
    course_dir = tmp_path / "course"
    course_dir.mkdir()
    rt = Runtime(
        env={**people, "REKINDLE_SMTP_URL": smtp_server.url, "REKINDLE_COURSE_DIR": str(course_dir)}
    )
    calls: list[int] = []
    loop = SendLoop(real_tick(rt, calls), 60, clock=Clock())
    try:
        with pytest.raises(CourseError):  # what the tick raises, and the loop swallows
            real_tick(rt)(lambda: False)
        for _ in range(3):
            tick_due(loop)
        assert len(calls) == 3  # no back-off for an error that waiting will not fix
        record = lines(daemon_log)
        assert len(record) == 3
        for level, message in record:
            assert level == "ERROR"
            assert message.startswith("send failed: no course manifest at ")
        assert smtp_server.messages == []

        shutil.copytree(default_course_dir(), course_dir, dirs_exist_ok=True)
        tick_due(loop)
        assert_each_got_lesson_1_once(smtp_server)
        assert lines(daemon_log)[3:] == [("INFO", "sent 3, failed 0, deferred 0")]
    finally:
        rt.close()


class Hop:
    """A TCP hop to PostgreSQL the test can cut and restore, as an outage or restart would."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self.open: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Refuse new connections and break every open one."""
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        for sock in self.open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.open = []


@pytest.mark.postgres
def test_database_outage_during_a_tick_does_not_kill_the_loop(
    env: dict[str, str], pg_url: str, smtp_server: MailServer, daemon_log: Any
) -> None:
    """PostgreSQL unreachable during a tick is logged; the loop goes on and sends once it is up."""
    url = make_url(pg_url)
    hop = Hop(url.host or "127.0.0.1", url.port or 5432)
    through_hop = url.set(host="127.0.0.1", port=hop.port).render_as_string(hide_password=False)
    people = {**env, "REKINDLE_DATABASE_URL": through_hop, "REKINDLE_SMTP_URL": smtp_server.url}
    for address in PEOPLE:
        add(people, address, now=ADDED)
    rt = Runtime(env=people)
    clock = Clock()
    loop = SendLoop(real_tick(rt), 60, clock=clock)
    try:
        rt.engine  # noqa: B018  (the daemon opens the database before its first tick)
        hop.cut()
        tick_due(loop)  # must not raise
        record = lines(daemon_log)
        assert len(record) == 1, record
        assert record[0][0] in ("WARNING", "ERROR")
        assert smtp_server.messages == []

        hop.restore()
        clock.t += MAX_BACKOFF
        tick_due(loop)
        assert_each_got_lesson_1_once(smtp_server)
        assert lines(daemon_log)[-1] == ("INFO", "sent 3, failed 0, deferred 0")
    finally:
        rt.close()
        hop.cut()


def test_stop_ends_the_run_between_messages(
    people: dict[str, str], smtp_server: MailServer, database_url: str, daemon_log: Any
) -> None:
    """stop() during a tick lets the message in flight finish; the rest go out once, later."""
    env = {**people, "REKINDLE_DATABASE_URL": database_url, "REKINDLE_SMTP_URL": smtp_server.url}
    if database_url != people["REKINDLE_DATABASE_URL"]:
        for address in PEOPLE:
            add(env, address, now=ADDED)
    rt = Runtime(env=env)
    reports: list[SendReport] = []

    def tick(stop: Callable[[], bool]) -> SendReport:
        def stop_after_first_message() -> bool:
            if smtp_server.messages:  # SIGTERM arrives once the first message is out
                loop.stop()
            return stop()

        report = rt.send_run(NOW, stop=stop_after_first_message)
        reports.append(report)
        return report

    loop = SendLoop(tick, 60, clock=Clock())
    try:
        tick_due(loop)
        assert [r.sent for r in reports] == [1]
        assert len(smtp_server.messages) == 1
        assert ("INFO", "stopping after the message in flight") in lines(daemon_log)
        tick_due(loop)  # a stopping loop starts no new run
        assert len(reports) == 1
        rows = listed(env)
        assert sorted(row["lessons_sent"] for row in rows.values()) == [0, 0, 1]
        assert all(row["next_lesson"] == 1 for row in rows.values() if not row["lessons_sent"])

        restarted = SendLoop(real_tick(rt), 60, clock=Clock())
        tick_due(restarted)
        tick_due(restarted)
        assert_each_got_lesson_1_once(smtp_server)
        assert len(smtp_server.messages) == 3
    finally:
        rt.close()


# --- the real command -------------------------------------------------------------------


def start_daemon(env: dict[str, str], stderr: Path, *args: str) -> subprocess.Popen[bytes]:
    """`rekindle-mail daemon ARGS` in a subprocess, stderr into a file."""
    if SCRIPT is None:
        pytest.fail("the rekindle-mail console script is not installed (pip install .)")
    with stderr.open("wb") as err:
        return subprocess.Popen(
            [SCRIPT, "daemon", *args], env=env, stdout=subprocess.DEVNULL, stderr=err
        )


def wait_for(what: str, condition: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    """Poll `condition` until true; fail if the daemon exits or WAIT seconds pass first."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the daemon exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def stop_daemon(proc: subprocess.Popen[bytes], signum: int) -> int:
    """Send `signum` and return the exit code; fail if it takes more than 10 seconds."""
    proc.send_signal(signum)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the daemon did not exit within 10 s of signal {signum}")


def last_run(env: dict[str, str]) -> dict[str, Any] | None:
    result = run(env, "status", "--now", NOW.isoformat(), "--json")
    assert result.exit_code == 0, result.output
    value: dict[str, Any] | None = json.loads(result.stdout)["last_run"]
    return value


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_daemon_delivers_and_exits_cleanly_on_signal(
    people: dict[str, str], smtp_server: MailServer, tmp_path: Path, signum: int
) -> None:
    """daemon --interval 1 sends the three due lessons once, ticks on, and exits 0 on a signal."""
    env = {**people, "REKINDLE_SMTP_URL": smtp_server.url, "REKINDLE_NOW": NOW.isoformat()}
    stderr = tmp_path / "daemon.err"
    proc = start_daemon(env, stderr, "--interval", "1")
    try:
        wait_for("three lessons", lambda: len(smtp_server.messages) >= 3, proc)
        seen: set[str] = set()

        def ticked_again() -> bool:
            run_ = last_run(people)
            if run_ and run_["finished_at"]:
                seen.add(run_["started_at"])
            return len(seen) >= 3

        wait_for("three more ticks", ticked_again, proc)
        code = stop_daemon(proc, signum)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = stderr.read_text()
    assert code == 0, err
    assert "Traceback" not in err
    assert "sending every 1s" in err
    assert err.count("sent 3, failed 0, deferred 0") == 1, err
    assert "sent 0" not in err  # ticks with nothing to do stay quiet
    assert err.rstrip().endswith("stopped")
    assert_each_got_lesson_1_once(smtp_server)
    assert len(smtp_server.messages) == 3
    assert smtp_server.connections == 1  # one connection for the run; idle ticks open none
    for message in smtp_server.messages:  # REKINDLE_NOW applies to the daemon's runs
        assert parsedate_to_datetime(str(message.message["Date"])) == NOW
    last = last_run(people)
    assert last is not None
    assert last["outcome"] == "ok"
    assert last["finished_at"] is not None
    assert last["clock"] == NOW.isoformat()


def test_daemon_survives_smtp_down_and_recovers(people: dict[str, str], tmp_path: Path) -> None:
    """With the SMTP server down the daemon logs, keeps running, sends once it is up, exits 0."""
    server = MailServer()  # nobody listens on its port until start()
    env = {**people, "REKINDLE_SMTP_URL": server.url, "REKINDLE_NOW": NOW.isoformat()}
    stderr = tmp_path / "daemon.err"
    proc = start_daemon(env, stderr, "--interval", "1")
    try:
        wait_for("a logged failure", lambda: "send failed" in stderr.read_text(), proc)
        assert proc.poll() is None
        assert "retrying in 2s: cannot connect to " in stderr.read_text()
        last = last_run(people)
        assert last is not None and last["outcome"] == "unavailable"
        assert str(server.port) in last["message"]
        server.start()
        wait_for("three lessons", lambda: len(server.messages) >= 3, proc)
        wait_for("its log line", lambda: "deferred 0" in stderr.read_text(), proc)
        code = stop_daemon(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()
    err = stderr.read_text()
    assert code == 0, err
    assert "Traceback" not in err
    assert err.count("send works again after") == 1, err
    assert err.count("sent 3, failed 0, deferred 0") == 1, err
    assert_each_got_lesson_1_once(server)
    assert len(server.messages) == 3


def test_daemon_stops_while_smtp_is_down(people: dict[str, str], tmp_path: Path) -> None:
    """SIGTERM while the server stays down still ends the daemon with exit 0 and no traceback."""
    down = f"smtp://127.0.0.1:{free_port()}"  # nobody listens there
    env = {**people, "REKINDLE_SMTP_URL": down, "REKINDLE_NOW": NOW.isoformat()}
    stderr = tmp_path / "daemon.err"
    proc = start_daemon(env, stderr, "--interval", "1")
    try:
        wait_for("a logged failure", lambda: "send failed" in stderr.read_text(), proc)
        code = stop_daemon(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = stderr.read_text()
    assert code == 0, err
    assert "Traceback" not in err
    assert {row["lessons_sent"] for row in listed(people).values()} == {0}


def run_to_exit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`rekindle-mail daemon ARGS` expected to end by itself quickly."""
    if SCRIPT is None:
        pytest.fail("the rekindle-mail console script is not installed (pip install .)")
    return subprocess.run(
        [SCRIPT, "daemon", *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_interval_zero_is_a_usage_error(env: dict[str, str]) -> None:
    """daemon --interval 0 exits 2 with a usage message naming --interval."""
    done = run_to_exit(env, "--interval", "0")
    assert done.returncode == 2
    assert "--interval" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_config_stops_the_daemon_at_start(env: dict[str, str]) -> None:
    """A bad setting ends the daemon at once with exit 1 and one line naming the key."""
    done = run_to_exit({**env, "REKINDLE_SEND_WINDOW": "bogus"}, "--interval", "1")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1, done.stderr
    assert err[0].startswith("Error: ")
    assert "send_window" in err[0]
