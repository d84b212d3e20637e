"""Benchmark: what DKIM signing adds to building one real lesson, in microseconds.

    python tests/bench/dkim_sign.py [--n 2000]

Builds lesson 1 for N recipients with no key, an rsa key, an ed25519 key and
both (dual), in one process against a throwaway SQLite file, and prints the
time per message and the part of it that signing adds. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from mailer.content import dkimkey
from mailer.files import write_new_private
from mailer.runtime import Runtime

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def per_message(env: dict[str, str], n: int) -> float:
    """Microseconds to compose lesson 1 for one of `n` recipients (best of three)."""
    rt = Runtime(env=env)
    try:
        with rt.session() as session:
            composer = rt.composer(session)
            composer.lesson(1, subscriber_id=1, email="warm@example.org", name="Warm", date=NOW)
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                for i in range(n):
                    composer.lesson(
                        1,
                        subscriber_id=i + 2,
                        email=f"reader{i}@example.org",
                        name=f"Reader {i}",
                        date=NOW,
                    )
                best = min(best, (time.perf_counter() - started) / n * 1e6)
    finally:
        rt.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="messages per measurement")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="rekindle-dkim-bench-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REKINDLE_")}
        env.update(
            HOME=str(workdir),
            REKINDLE_DATABASE_URL=f"sqlite:///{workdir / 'bench.db'}",
            REKINDLE_FROM="Rekindle <hello@example.org>",
            REKINDLE_BASE_URL="https://rekindle.example.org",
            REKINDLE_POSTAL_ADDRESS="Rekindle, 1 Example Street, Springfield",
            REKINDLE_SECRET_KEY="benchmark-secret",
        )
        files = {}
        for kind in dkimkey.KINDS:
            files[kind] = workdir / f"{kind}.pem"
            write_new_private(files[kind], dkimkey.generate(kind))
        setups = {
            "unsigned": {},
            "rsa": {"REKINDLE_DKIM_KEY_FILE": str(files["rsa"])},
            "ed25519": {"REKINDLE_DKIM_KEY_FILE": str(files["ed25519"])},
            "dual": {
                "REKINDLE_DKIM_KEY_FILE": f"{files['rsa']},{files['ed25519']}",
                "REKINDLE_DKIM_SELECTOR": "r,e",
            },
        }
        base = None
        for name, extra in setups.items():
            micro = per_message({**env, **extra}, args.n)
            base = micro if base is None else base
            added = "" if name == "unsigned" else f"  (signing adds {micro - base:.0f} us)"
            print(f"{name:<9} {micro:7.0f} us per message{added}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
