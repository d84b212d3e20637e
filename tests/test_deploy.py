"""deploy/: what can be checked on this machine without root, systemd as PID 1 or a Docker engine.

Every `rekindle-mail ...` that the crontab, the systemd units, the Dockerfile, compose.yaml
and deploy/README.md run is resolved against the real click command tree (commands,
options, option values, arguments); the units pass `systemd-analyze verify` (when it is
installed) with ExecStart pointed at the installed console script; the cron line is run
for real through `sh` with its `flock` guard; the web health check of compose.yaml is run
against a real `serve`; the settings the units and compose.yaml give are fed to the real
CLI. `docker build` and `docker compose up` need an engine and are not tried here.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from clirun import SCRIPT, script
from mailer.cli import cli
from mailserver import free_port

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DOCKERIGNORE = DEPLOY.parent / ".dockerignore"
UNITS = sorted(DEPLOY.glob("rekindle-*.service")) + sorted(DEPLOY.glob("rekindle-*.timer"))
SERVICES = [unit for unit in UNITS if unit.suffix == ".service"]
INSTALLED = "/opt/rekindle/venv/bin/rekindle-mail"  # where the units and crontab expect it
SHELL_OPERATOR = re.compile(r"^[();<>|&]+$")
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallFilter": "@system-service",
    "CapabilityBoundingSet": "",
    "UMask": "0077",
}


# --- reading the files ------------------------------------------------------------------


def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as section -> key -> values (keys may repeat, e.g. Environment=)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} before any [Section]"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a Key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_environment(service: dict[str, list[str]]) -> dict[str, str]:
    """The Environment= assignments of a [Service] section."""
    env: dict[str, str] = {}
    for value in service.get("Environment", []):
        for item in shlex.split(value):
            name, _, setting = item.partition("=")
            env[name] = setting
    return env


def crontab_lines() -> tuple[dict[str, str], list[str]]:
    """The crontab's environment assignments and its job lines."""
    env: dict[str, str] = {}
    jobs: list[str] = []
    for raw in (DEPLOY / "crontab").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        assignment = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", line)
        if assignment:
            env[assignment.group(1)] = assignment.group(2)
        else:
            jobs.append(line)
    return env, jobs


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the Dockerfile's last stage (the image that ships)."""
    instructions = dockerfile_instructions()
    start = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[start:]


def exec_form(instructions: list[tuple[str, str]], word: str) -> list[str]:
    """The JSON (exec form) argument list of the last `word` instruction."""
    values = [rest for w, rest in instructions if w == word]
    assert values, f"the Dockerfile has no {word}"
    parsed = json.loads(values[-1])
    assert isinstance(parsed, list), f"{word} is not in exec (JSON) form: {values[-1]}"
    return parsed


def compose() -> dict:
    """deploy/compose.yaml, parsed (anchors and merge keys resolved) by PyYAML."""
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install '.[test]')")
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def our_services(doc: dict) -> dict[str, dict]:
    """The compose services that run the image built from deploy/Dockerfile."""
    return {
        name: service
        for name, service in doc["services"].items()
        if isinstance(service.get("build"), dict)
        and service["build"].get("dockerfile") == "deploy/Dockerfile"
    }


def words(line: str) -> list[str]:
    """A shell command line as words, with redirections and pipes as their own tokens."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def calls_in(line: str) -> list[list[str]]:
    """The argument lists given to rekindle-mail on one shell command line."""
    tokens = words(line)
    found = []
    for i, token in enumerate(tokens):
        if token == "rekindle-mail" or (token.endswith("/rekindle-mail") and " " not in token):
            args = []
            for arg in tokens[i + 1 :]:
                if SHELL_OPERATOR.match(arg):
                    break
                args.append(arg)
            found.append(args)
    return found


def readme_calls() -> list[list[str]]:
    """rekindle-mail runs in deploy/README.md's code blocks, also through its aliases.

    In shell blocks, `rekindle ARGS` is the README's systemd-run alias for the console
    script and `docker compose run --rm SERVICE ARGS` runs ARGS under the entry point.
    """
    text = (DEPLOY / "README.md").read_text()
    calls = []
    for language, block in re.findall(r"^```([a-z]*)\n(.*?)^```", text, re.S | re.M):
        for line in block.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            tokens = words(line.split(" #")[0])
            if language == "sh" and tokens[:1] == ["rekindle"]:
                calls.append(tokens[1:])
            elif tokens[:3] == ["docker", "compose", "run"]:
                rest = [t for t in tokens[3:] if not t.startswith("-")]
                calls.append(rest[1:])
            else:
                calls.extend(calls_in(line))
    return calls


def calls_by_source() -> dict[str, list[list[str]]]:
    """Every rekindle-mail argument list that deploy/ runs, keyed by the file (part) it is in."""
    sources: dict[str, list[list[str]]] = {}
    _, jobs = crontab_lines()
    sources["crontab"] = [call for job in jobs for call in calls_in(job)]
    for unit in SERVICES:
        service = unit_settings(unit).get("Service", {})
        sources[unit.name] = [
            call
            for key in ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop")
            for value in service.get(key, [])
            for call in calls_in(value.lstrip("@-:+!|"))
        ]
    stage = final_stage()
    entrypoint = exec_form(stage, "ENTRYPOINT")
    default = exec_form(stage, "CMD")
    sources["Dockerfile"] = [call for call in calls_in(shlex.join([*entrypoint, *default]))]
    sources["README.md"] = readme_calls()
    return sources


CALLS = calls_by_source()


def resolve(args: list[str]) -> str:
    """Walk `rekindle-mail ARGS` down the real command tree; return an error, or '' if valid.

    Groups consume their own options and then a subcommand; the last command parses
    the rest exactly as click does at run time (unknown options, bad values, missing
    or extra arguments), without running anything.
    """
    command: click.Command = cli
    ctx = click.Context(cli, info_name="rekindle-mail")
    path = ["rekindle-mail"]
    rest = list(args)
    while isinstance(command, click.Group):
        while rest and rest[0].startswith("-"):
            name = rest[0].split("=", 1)[0]
            option = next((p for p in command.params if name in (*p.opts, *p.secondary_opts)), None)
            if option is None:
                return f"`{' '.join(path)}` has no option {name}"
            takes_value = isinstance(option, click.Option) and not (option.is_flag or option.count)
            rest = rest[2:] if takes_value and "=" not in rest[0] else rest[1:]
        if not rest:
            return f"`{' '.join(path)}` is given no command"
        name, *rest = rest
        sub = command.get_command(ctx, name)
        if sub is None:
            known = ", ".join(command.list_commands(ctx))
            return f"`{name}` is not a command of `{' '.join(path)}` (it has: {known})"
        path.append(name)
        if isinstance(sub, click.Group):
            ctx = click.Context(sub, info_name=name, parent=ctx)
        command = sub
    try:
        command.make_context(path[-1], rest, parent=ctx)
    except click.UsageError as exc:
        return f"`{' '.join(path)} {shlex.join(rest)}`: {exc.format_message()}"
    return ""


# --- 1. every command named in deploy/ exists ----------------------------------------------


@pytest.mark.parametrize("source", sorted(CALLS))
def test_every_rekindle_mail_run_in_deploy_is_a_real_command_with_real_options(source):
    """Each `rekindle-mail ...` a deploy file runs is a CLI command taking those options."""
    calls = CALLS[source]
    assert calls, f"deploy/{source} runs no rekindle-mail command"
    problems = [problem for call in calls if (problem := resolve(call))]
    assert problems == [], f"deploy/{source}:\n" + "\n".join(problems)


def test_every_compose_service_of_the_image_runs_a_real_command():
    """compose.yaml's services built from the Dockerfile run real commands under its entry point."""
    doc = compose()
    services = our_services(doc)
    assert {"migrate", "daemon", "web"} <= set(services), sorted(doc["services"])
    entrypoint = exec_form(final_stage(), "ENTRYPOINT")
    default = exec_form(final_stage(), "CMD")
    problems = []
    for name, service in services.items():
        command = service.get("command", default)
        argv = [*service.get("entrypoint", entrypoint), *command]
        assert isinstance(command, list), f"{name}: command should be a list, not {command!r}"
        calls = calls_in(shlex.join(argv))
        assert calls, f"compose service {name} does not run rekindle-mail: {argv}"
        problems += [f"{name}: {problem}" for call in calls if (problem := resolve(call))]
    assert problems == [], "\n".join(problems)


def test_the_resolver_rejects_an_unknown_command_option_or_value():
    """The command check fails for a misspelt command, an unknown option and a bad value."""
    assert resolve(["send"]) == ""
    assert resolve(["--config", "/etc/rekindle/rekindle.toml", "db", "upgrade"]) == ""
    assert "is not a command" in resolve(["sned"])
    assert "is given no command" in resolve(["db"])
    assert "--intervall" in resolve(["serve", "--intervall", "3"])
    assert "--port" in resolve(["serve", "--port", "eighty"])


# --- 2. systemd units ------------------------------------------------------------------


@pytest.fixture
def unit_copies(tmp_path: Path) -> Path:
    """Copies of the units with ExecStart pointed at the installed console script."""
    if SCRIPT is None:
        pytest.fail("the rekindle-mail console script is not installed (pip install .)")
    folder = tmp_path / "units"
    folder.mkdir()
    for unit in UNITS:
        text = unit.read_text()
        assert INSTALLED in text or unit.suffix == ".timer", f"{unit.name} does not run {INSTALLED}"
        (folder / unit.name).write_text(text.replace(INSTALLED, SCRIPT))
    return folder


def verify(*units: Path) -> tuple[int, list[str]]:
    """`systemd-analyze verify` on the units: exit code and the lines that concern them."""
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = (done.stdout + done.stderr).splitlines()
    return done.returncode, [line for line in lines if "rekindle" in line]


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)
def test_units_pass_systemd_analyze_verify(unit_copies):
    """`systemd-analyze verify` accepts every unit without a single complaint about it."""
    units = sorted(unit_copies.iterdir())
    assert {u.name for u in units} == {
        "rekindle-send.service",
        "rekindle-send.timer",
        "rekindle-daemon.service",
        "rekindle-web.service",
    }
    code, complaints = verify(*units)
    assert (code, complaints) == (0, [])
    # The same check on a broken copy does complain (so the pass above means something).
    broken = unit_copies / "rekindle-web.service"
    broken.write_text(broken.read_text().replace("ProtectSystem=strict", "ProtectSystem=strictly"))
    code, complaints = verify(broken)
    assert any("strictly" in line or "protect system" in line.lower() for line in complaints), (
        complaints
    )


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)
def test_the_timer_fires_every_quarter_hour_and_starts_the_send_service():
    """rekindle-send.timer's OnCalendar elapses every 15 minutes; it triggers rekindle-send."""
    timer = unit_settings(DEPLOY / "rekindle-send.timer")["Timer"]
    assert timer.get("Unit", ["rekindle-send.service"]) == ["rekindle-send.service"]
    assert (DEPLOY / "rekindle-send.service").exists()
    assert timer["Persistent"] == ["true"]
    (calendar,) = timer["OnCalendar"]
    done = subprocess.run(
        ["systemd-analyze", "calendar", "--iterations=5", calendar],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    minutes = re.findall(r"\d{4}-\d\d-\d\d (\d\d):(\d\d):00 UTC", done.stdout)
    assert len(minutes) == 5, done.stdout
    stamps = [int(h) * 60 + int(m) for h, m in minutes]
    assert {m % 15 for m in stamps} == {0}
    assert {(b - a) % (24 * 60) for a, b in itertools.pairwise(stamps)} == {15}


@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.name)
def test_services_run_unprivileged_hardened_with_config_secrets_and_state(unit):
    """Each service runs as `rekindle`, hardened, with the config, secrets and StateDirectory."""
    service = unit_settings(unit)["Service"]
    single = {key: values[-1] for key, values in service.items()}
    assert single["User"] == "rekindle"
    missing = {k: v for k, v in HARDENING.items() if single.get(k) != v}
    assert missing == {}, f"{unit.name} lacks or differs on: {missing}"
    env = unit_environment(service)
    assert env["REKINDLE_CONFIG"] == "/etc/rekindle/rekindle.toml"
    assert single["EnvironmentFile"].lstrip("-") == "/etc/rekindle/secrets.env"
    assert env["XDG_DATA_HOME"] == f"/var/lib/{single['StateDirectory']}"
    assert single["StateDirectory"] == "rekindle"


def test_send_service_is_a_oneshot_that_counts_tempfail_as_success():
    """rekindle-send is a oneshot whose exit 75 (SMTP down, mail waits) is not a failure."""
    service = unit_settings(DEPLOY / "rekindle-send.service")["Service"]
    assert service["Type"] == ["oneshot"]
    assert "75" in " ".join(service["SuccessExitStatus"]).split()
    daemon = unit_settings(DEPLOY / "rekindle-daemon.service")["Service"]
    assert daemon["Restart"] == ["on-failure"] and daemon["KillSignal"] == ["SIGTERM"]
    web = unit_settings(DEPLOY / "rekindle-web.service")["Service"]
    assert "--host 127.0.0.1" in web["ExecStart"][0]


def test_the_units_data_directory_holds_the_default_database_and_outbox(tmp_path, env):
    """With the units' XDG_DATA_HOME and no database/outbox set, both land in the state folder."""
    service = unit_settings(DEPLOY / "rekindle-send.service")["Service"]
    state = Path(unit_environment(service)["XDG_DATA_HOME"])
    root = tmp_path / "root"
    local = root / state.relative_to("/")
    unset = ("REKINDLE_DATABASE_URL", "REKINDLE_OUTBOX")
    run_env = {k: v for k, v in env.items() if k not in unset} | {"XDG_DATA_HOME": str(local)}
    done = script(run_env, "status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["database"] == f"sqlite:///{local}/rekindle-mail/rekindle.db"
    assert status["delivery"] == f"the outbox {local}/rekindle-mail/outbox"
    assert (local / "rekindle-mail" / "rekindle.db").is_file()


# --- 3. crontab --------------------------------------------------------------------------

CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


def test_crontab_is_one_five_field_job_guarded_by_flock():
    """The crontab is one `*/15 * * * *` job running `flock -n LOCK .../rekindle-mail send`."""
    env, jobs = crontab_lines()
    assert len(jobs) == 1, jobs
    fields = jobs[0].split(None, 5)
    assert len(fields) == 6, jobs[0]
    schedule, command = fields[:5], fields[5]
    assert all(CRON_FIELD.match(f) for f in schedule), schedule
    assert schedule == ["*/15", "*", "*", "*", "*"]
    tokens = words(command)
    assert tokens[:2] == ["flock", "-n"], command
    assert tokens[2].startswith("/") and tokens[2].endswith(".lock"), tokens[2]
    assert tokens[3] == INSTALLED and tokens[4] == "send", tokens
    assert env["REKINDLE_CONFIG"] == "/etc/rekindle/rekindle.toml"
    assert env["XDG_DATA_HOME"].startswith("/")


def test_the_cron_job_runs_send_once_and_skips_while_a_run_holds_the_lock(tmp_path, env):
    """The cron command sends quietly; while the lock is held it exits 1 and runs nothing."""
    if shutil.which("flock") is None:
        pytest.skip("flock (util-linux) is not installed here")
    assert SCRIPT is not None
    cron_env, jobs = crontab_lines()
    command = jobs[0].split(None, 5)[5]
    lock = tmp_path / "send.lock"
    config = tmp_path / "rekindle.toml"
    config.write_text("# settings come from the environment in this test\n")
    command = command.replace(INSTALLED, shlex.quote(SCRIPT))
    command = command.replace(words(command)[2], shlex.quote(str(lock)), 1)
    run_env = env | {"REKINDLE_CONFIG": str(config), "XDG_DATA_HOME": str(tmp_path / "data")}
    assert set(cron_env) - {"MAILTO"} <= set(run_env)

    def cron() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", "-c", command],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    done = cron()
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    first = json.loads(script(run_env, "status", "--json").stdout)["last_run"]
    assert first is not None and first["outcome"] == "ok"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        skipped = cron()
    assert (skipped.returncode, skipped.stdout) == (1, "")
    after = json.loads(script(run_env, "status", "--json").stdout)["last_run"]
    assert after == first


# --- 4. Dockerfile and .dockerignore -----------------------------------------------------


def test_dockerfile_is_slim_python_311_non_root_with_rekindle_mail_entry_point():
    """The image is python:3.11-slim, runs as a non-root user, enters `rekindle-mail daemon`."""
    stages = [rest.split()[0] for word, rest in dockerfile_instructions() if word == "FROM"]
    assert stages and all(image == "python:3.11-slim" for image in stages), stages
    stage = final_stage()
    users = [rest for word, rest in stage if word == "USER"]
    assert users, "the final stage sets no USER (it would run as root)"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users
    assert exec_form(stage, "ENTRYPOINT") == ["rekindle-mail"]
    assert exec_form(stage, "CMD") == ["daemon"]
    env = " ".join(rest for word, rest in stage if word == "ENV")
    assert re.search(r"\bXDG_DATA_HOME=/data\b", env), env
    assert any(word == "VOLUME" and "/data" in rest for word, rest in stage)
    assert ("EXPOSE", "8080") in stage
    installs = [rest for word, rest in dockerfile_instructions() if word == "RUN" and "pip" in rest]
    assert any("[postgres]" in rest for rest in installs), installs


def test_dockerignore_keeps_local_state_out_and_the_build_inputs_in():
    """.dockerignore drops .git, .venv, caches and local config, never the wheel's inputs."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (".git", ".venv", "**/.hypothesis", ".pytest_cache", "rekindle.toml"):
        assert needed in patterns, f"{needed} is not ignored"
    for kept in ("pyproject.toml", "README.md", "mailer", "subscribers", "templates"):
        assert not any(Path(kept).match(p) for p in patterns), f"{kept} would be left out"
        assert (DEPLOY.parent / kept).exists()


# --- compose.yaml ------------------------------------------------------------------------


def test_compose_wires_postgres_mail_catcher_migration_daemon_and_web():
    """compose.yaml: db healthy -> migrate (db upgrade) done -> daemon and web, on PostgreSQL."""
    doc = compose()
    services = doc["services"]
    assert set(services) == {"db", "mail", "migrate", "daemon", "web"}
    assert services["db"]["image"].startswith("postgres:16")
    assert "healthcheck" in services["db"]
    assert services["mail"]["image"].startswith("axllent/mailpit")
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("daemon", "web"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name
    assert services["daemon"]["command"][0] == "daemon"
    for name, service in our_services(doc).items():
        env = service["environment"]
        assert env["REKINDLE_DATABASE_URL"].startswith("postgresql://"), name
        assert env["REKINDLE_DATABASE_URL"].endswith("@db/rekindle"), name
        assert env["REKINDLE_SMTP_URL"] == "smtp://mail:1025", name
        assert env["REKINDLE_BASE_URL"] == "http://localhost:8080", name
        assert "CHANGE-ME" in env["REKINDLE_SECRET_KEY"].upper(), name
    assert any(port.endswith("8080:8080") for port in services["web"]["ports"])


def test_compose_settings_are_accepted_by_the_cli(env):
    """The shared compose environment is valid configuration: `status` runs on it."""
    service = compose()["services"]["daemon"]
    settings = {k: str(v) for k, v in service["environment"].items()}
    settings.pop("REKINDLE_DATABASE_URL")  # no `db` host here: the fixture's SQLite file stands in
    clean = {k: v for k, v in env.items() if not k.startswith("REKINDLE_")}
    done = script(
        clean | settings | {"REKINDLE_DATABASE_URL": env["REKINDLE_DATABASE_URL"]},
        "status",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["delivery"] == "the SMTP server mail:1025"


@pytest.fixture
def served(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A real `rekindle-mail serve` on a free loopback port, once /healthz answers."""
    assert SCRIPT is not None
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [SCRIPT, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(400):
            assert process.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail(f"serve did not answer /healthz:\n{log.read_text()}")
        yield port, process
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_web_health_check_passes_on_a_real_serve_and_fails_without_one(served):
    """compose's web healthcheck exits 0 against a running `serve` and non-zero once it is gone."""
    port, process = served
    test = compose()["services"]["web"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python", test
    argv = [sys.executable, *test[2:]]
    assert "127.0.0.1:8080/healthz" in " ".join(argv)
    argv = [arg.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for arg in argv]
    healthy = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert healthy.returncode == 0, healthy.stderr
    process.terminate()
    process.wait(timeout=10)
    down = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert down.returncode != 0
