"""Benchmark: `rekindle-mail send` against the raw SMTP ceiling of the same sink.

    python tests/bench/send_throughput.py [--n 100000] [--database-url URL] [--connections N]
                                          [--dkim rsa|ed25519]
    python tests/bench/send_throughput.py --compare rsa|ed25519 [--rounds 3] [--n ...]

Seeds N subscribers, all due at once, by `subscribers import` (timed: the import
rate); times an idle `send` (nothing due) over all of them; starts an aiosmtpd
sink in its own process; runs `rekindle-mail send` as a subprocess (messages per
second, peak RSS); then sends a sample of the project's own messages as raw
bytes over one reused connection to the same sink (the wire ceiling), and a
naive pipeline (premailer and a fresh EmailMessage per recipient, a connection
per message) on a smaller N as a reference. Prints one table.

With a PostgreSQL URL, the benchmark works in a schema of its own, dropped
afterwards. Nothing here is a test: it prints figures and exits 0 unless a run
failed.

With --dkim, a new key of that type is made and every message is signed with it
(README, "Getting into the inbox"). With --compare, only `send` is timed:
unsigned and signed runs in alternating rounds against one sink, each on a
freshly seeded database, printing each round's ratio and their median.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

HERE = Path(__file__).resolve().parent
ADDED = "2026-03-02T08:00:00+00:00"  # a Monday, 08:00 UTC: lesson 1 is due at 09:00
IDLE_AT = "2026-03-02T08:30:00+00:00"  # before anything is due
SEND_AT = "2026-03-02T09:30:00+00:00"  # everything is due
SCRIPT = shutil.which("rekindle-mail", path=str(Path(sys.executable).parent)) or "rekindle-mail"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def database(url: str | None, workdir: Path, name: str = "bench") -> Iterator[str]:
    """A fresh database: a SQLite file in `workdir`, or a new schema on the PostgreSQL server."""
    if not url or url.startswith("sqlite"):
        yield url or f"sqlite:///{workdir / (name + '.db')}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from mailer.store.db import normalize_url

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(url))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        scoped = make_url(normalize_url(url)).update_query_dict(
            {"options": f"-csearch_path={schema}"}
        )
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def sink() -> Iterator[tuple[str, list[int]]]:
    """An SMTP sink in its own process; yields its URL and, after exit, [messages, bytes]."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "sink.py"), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit("the SMTP sink did not start")
    counts: list[int] = []
    try:
        yield f"smtp://127.0.0.1:{port}", counts
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        counts.extend(int(x) for x in out.split())


@dataclass
class Timed:
    """One run of the console script."""

    seconds: float
    rss_mb: int
    cpu: float  # user + system seconds of the process
    system: float  # the system (kernel) part of it
    machine_busy: float | None  # cores busy on the whole machine meanwhile (Linux)
    out: str


def _busy_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None off Linux."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def run_timed(env: dict[str, str], *args: str) -> Timed:
    """Run the console script and measure it. Exits on failure."""
    ticks = _busy_ticks()
    started = time.perf_counter()
    proc = subprocess.Popen([SCRIPT, *args], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    after = _busy_ticks()
    busy = None
    if ticks and after and after[1] > ticks[1]:
        busy = (after[0] - ticks[0]) / (after[1] - ticks[1]) * (os.cpu_count() or 1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"rekindle-mail {' '.join(args)} exited {proc.returncode}")
    cpu = usage.ru_utime + usage.ru_stime
    return Timed(elapsed, usage.ru_maxrss // 1024, cpu, usage.ru_stime, busy, out)


def seed(env: dict[str, str], n: int, workdir: Path) -> float:
    """Import N subscribers (all in UTC); return rows per second."""
    path = workdir / "subscribers.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "name", "timezone"])
        for i in range(n):
            writer.writerow([f"reader{i}@example.org", f"Reader {i}", "UTC"])
    elapsed = run_timed({**env, "REKINDLE_NOW": ADDED}, "subscribers", "import", str(path)).seconds
    return n / elapsed


def sample_messages(env: dict[str, str], count: int) -> list[tuple[str, str, bytes]]:
    """`count` of the project's own lesson-1 messages as (from, to, bytes), built in-process."""
    from datetime import datetime

    from mailer.runtime import Runtime

    rt = Runtime(env=env)
    now = datetime.fromisoformat(SEND_AT)
    messages = []
    with rt.session() as session:
        composer = rt.composer(session)
        for i in range(count):
            email = f"sample{i}@example.org"
            out = composer.lesson(
                1,
                subscriber_id=10_000_000 + i,
                email=email,
                name=f"Sample {i}",
                date=now,
                message_id=composer.message_id(10_000_000 + i, email, "lesson-1"),
            )
            messages.append((out.sender, out.recipient, out.data))
    rt.close()
    return messages


def wire_rate(url: str, messages: list[tuple[str, str, bytes]]) -> float:
    """Raw bytes over one reused connection: the ceiling the sink allows."""
    port = int(url.rsplit(":", 1)[1])
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for sender, recipient, data in messages:
            smtp.sendmail(sender, [recipient], data)
    return len(messages) / (time.perf_counter() - started)


def naive_rate(url: str, env: dict[str, str], count: int) -> float:
    """Premailer and a fresh EmailMessage per recipient, a new connection per message."""
    import premailer

    from mailer.runtime import Runtime

    rt = Runtime(env=env)
    lesson = rt.renderer.lesson(1)
    html, text = lesson.personalise(_sample_recipient())
    rt.close()
    port = int(url.rsplit(":", 1)[1])
    started = time.perf_counter()
    for i in range(count):
        inlined = premailer.transform(html, disable_validation=True)
        msg = EmailMessage()
        msg["From"] = "Rekindle <hello@example.org>"
        msg["To"] = f"Naive {i} <naive{i}@example.org>"
        msg["Subject"] = "Week 1 of 6"
        msg.set_content(text)
        msg.add_alternative(inlined, subtype="html")
        data = msg.as_bytes(policy=SMTP)
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.sendmail("hello@example.org", [f"naive{i}@example.org"], data)
    return count / (time.perf_counter() - started)


def _sample_recipient():  # type: ignore[no-untyped-def]
    from mailer.content.render import Recipient

    return Recipient(
        first_name="Sample",
        email="sample@example.org",
        unsubscribe_url="https://rekindle.example.org/unsubscribe/x",
        confirm_url="",
    )


def dkim_key(workdir: Path, kind: str) -> dict[str, str]:
    """The settings that sign with a new key of `kind`, written to `workdir`."""
    from mailer.content import dkimkey
    from mailer.files import write_new_private

    path = workdir / f"dkim-{kind}.pem"
    write_new_private(path, dkimkey.generate(kind))
    return {"REKINDLE_DKIM_KEY_FILE": str(path), "REKINDLE_DKIM_SELECTOR": f"bench-{kind}"}


def bench_env(workdir: Path, url: str, smtp_url: str) -> dict[str, str]:
    """The settings of a benchmark run: this database, this sink, nothing from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REKINDLE_")}
    env.update(
        HOME=str(workdir),
        REKINDLE_DATABASE_URL=url,
        REKINDLE_SMTP_URL=smtp_url,
        REKINDLE_FROM="Rekindle <hello@example.org>",
        REKINDLE_BASE_URL="https://rekindle.example.org",
        REKINDLE_POSTAL_ADDRESS="Rekindle, 1 Example Street, Springfield",
        REKINDLE_SECRET_KEY="benchmark-secret",
    )
    return env


def compare(args: argparse.Namespace) -> None:
    """Unsigned and signed sends of N each, in rounds, on one sink; prints each pair's ratio.

    Every send gets a database of its own, seeded the same way, and both kinds share
    the one sink process, so the pair differs only in signing. The order alternates
    (unsigned first in odd rounds, signed first in even ones) so that drift in the
    machine's pace weighs on both alike; the median of the rounds' ratios is the figure.
    """
    workdir = Path(tempfile.mkdtemp(prefix="rekindle-bench-"))
    url = args.database_url
    if url and url.startswith("sqlite"):
        url = None  # a file per run, in `workdir`
    send_args = ["send", "--now", SEND_AT, "--json"]
    if args.connections:
        send_args += ["--connections", str(args.connections)]
    ratios = []
    try:
        signing = dkim_key(workdir, args.compare)
        with sink() as (smtp_url, counts):
            for round_ in range(1, args.rounds + 1):
                rates: dict[bool, Timed] = {}
                for signed in (False, True) if round_ % 2 else (True, False):
                    name = f"r{round_}-{'signed' if signed else 'unsigned'}"
                    with database(url, workdir, name) as db_url:
                        env = bench_env(workdir, db_url, smtp_url)
                        if signed:
                            env.update(signing)
                        seed(env, args.n, workdir)
                        timed = run_timed(env, *send_args)
                    if int(json.loads(timed.out)["sent"]) != args.n:
                        raise SystemExit("not every message was sent")
                    rates[signed] = timed
                plain, signed_run = args.n / rates[False].seconds, args.n / rates[True].seconds
                ratios.append(signed_run / plain)
                print(
                    f"round {round_}: unsigned {plain:.0f} msg/s"
                    f" ({rates[False].cpu / args.n * 1e6:.0f} us CPU per message),"
                    f" {args.compare} {signed_run:.0f} msg/s"
                    f" ({rates[True].cpu / args.n * 1e6:.0f} us),"
                    f" ratio {signed_run / plain:.2f}",
                    flush=True,
                )
        if counts[0] != 2 * args.rounds * args.n:
            raise SystemExit("not every message was delivered exactly once")
        print(
            f"{args.compare} / unsigned over {args.rounds} rounds of {args.n:,}"
            f" (--connections {args.connections or 'default'}):"
            f" median {statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="subscribers (default 100000)")
    parser.add_argument("--database-url", help="PostgreSQL URL (default: a SQLite file)")
    parser.add_argument("--connections", type=int, help="passed to send --connections")
    parser.add_argument("--wire-sample", type=int, default=3000, help="messages for the ceiling")
    parser.add_argument("--naive-n", type=int, default=300, help="messages for the naive row")
    parser.add_argument(
        "--dkim", choices=["rsa", "ed25519"], help="sign every message with a new key of this type"
    )
    parser.add_argument(
        "--compare",
        choices=["rsa", "ed25519"],
        help="only time send, unsigned and signed with this key type, in alternating rounds",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds for --compare (default 3)")
    args = parser.parse_args()
    if args.compare:
        compare(args)
        return

    workdir = Path(tempfile.mkdtemp(prefix="rekindle-bench-"))
    try:
        with database(args.database_url, workdir) as url, sink() as (smtp_url, counts):
            env = bench_env(workdir, url, smtp_url)
            if args.dkim:
                env.update(dkim_key(workdir, args.dkim))
            import_rate = seed(env, args.n, workdir)
            idle = min(run_timed(env, "send", "--now", IDLE_AT).seconds for _ in range(3))
            sample = sample_messages(env, args.wire_sample)
            ceiling_before = wire_rate(smtp_url, sample)
            send_args = ["send", "--now", SEND_AT, "--json"]
            if args.connections:
                send_args += ["--connections", str(args.connections)]
            timed = run_timed(env, *send_args)
            elapsed, rss = timed.seconds, timed.rss_mb
            report = json.loads(timed.out)
            sent = int(report["sent"])
            ceiling_after = wire_rate(smtp_url, sample)
            # The sink's pace drifts: measured before and after, the higher one counts.
            ceiling = max(ceiling_before, ceiling_after)
            naive = naive_rate(smtp_url, env, args.naive_n)
        backend = "postgresql" if url.startswith("postgresql") else "sqlite"
        rate = sent / elapsed
        rows = [
            ("database", backend),
            ("subscribers (N)", f"{args.n:,}"),
            ("send --connections", str(args.connections or "default")),
            ("DKIM signing", args.dkim or "off"),
            ("send: messages sent", f"{sent:,} (sink accepted {counts[0]:,})"),
            ("send: wall time", f"{elapsed:.1f} s"),
            ("send: messages/s", f"{rate:.0f}"),
            (
                "wire ceiling (raw bytes, 1 connection)",
                f"{ceiling:.0f} msg/s (before {ceiling_before:.0f}, after {ceiling_after:.0f})",
            ),
            ("send / wire", f"{rate / ceiling:.2f}"),
            ("naive pipeline (reference)", f"{naive:.0f} msg/s over {args.naive_n}"),
            ("send: peak RSS", f"{rss} MB"),
            (
                "send: CPU time",
                f"{timed.cpu:.1f} s, {timed.system:.1f} s of it system"
                f" ({timed.cpu / elapsed:.0%} of a core, {timed.cpu / max(sent, 1) * 1e6:.0f} us"
                " per message)",
            ),
            (
                "machine: cores busy during send",
                "n/a"
                if timed.machine_busy is None
                else f"{timed.machine_busy:.2f} of {os.cpu_count()}",
            ),
            ("idle send (nothing due), best of 3", f"{idle:.2f} s"),
            ("subscribers import", f"{import_rate:,.0f} rows/s"),
            ("message size", f"{len(sample[0][2]):,} bytes"),
        ]
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key.ljust(width)}  {value}")
        if sent != args.n or counts[0] != args.n + 2 * args.wire_sample + args.naive_n:
            raise SystemExit("not every message was delivered exactly once")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
