"""A real `rekindle-mail serve` for tests, and plain HTTP clients to talk to it as anyone would."""

from __future__ import annotations

import http.client
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlencode

import pytest

from clirun import SCRIPT
from mailserver import free_port

FORM = "application/x-www-form-urlencoded"
T = TypeVar("T")


@dataclass
class Answer:
    """One HTTP response: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: str


@dataclass
class Served:
    """A running `serve`: where it listens, its process and its log file."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Answer:
        """One request on its own connection; `form` is sent urlencoded as a browser would."""
        headers = dict(headers or {})
        if form is not None:
            body = urlencode(form).encode()
            headers.setdefault("Content-Type", FORM)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read().decode("utf-8", "replace")
            found = {k.lower(): v for k, v in response.getheaders()}
            return Answer(response.status, found, data)
        finally:
            connection.close()

    def post(self, path: str, form: dict[str, str], **headers: str) -> Answer:
        """A form POST with extra headers (given as X_Forwarded_For=... style keywords)."""
        named = {k.replace("_", "-"): v for k, v in headers.items()}
        return self.request("POST", path, form=form, headers=named)

    def get(self, path: str, **headers: str) -> Answer:
        named = {k.replace("_", "-"): v for k, v in headers.items()}
        return self.request("GET", path, headers=named)


def poll(check: Callable[[], T], what: str, attempts: int = 400) -> T:
    """Ask `check()` until it returns something truthy (every 50 ms, at most `attempts` times)."""
    for _ in range(attempts):
        found = check()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[Served]:
    """`rekindle-mail serve` on a free loopback port, up once /healthz answers."""
    assert SCRIPT, "the rekindle-mail console script is not installed"
    port = free_port()
    with log.open("wb") as out:  # a file, not a pipe: a chatty server never blocks on it
        process = subprocess.Popen(
            [SCRIPT, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Served(port, process, log)

    def healthy() -> bool:
        if process.poll() is not None:
            pytest.fail(f"serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            return served.get("/healthz").status == 200
        except OSError:
            return False

    try:
        for _ in range(300):
            if healthy():
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"serve did not answer /healthz:\n{log.read_text()}")
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
