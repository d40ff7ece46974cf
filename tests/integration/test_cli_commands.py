"""The `flotilla` console script, as an operator runs it, against a moto server.

Each bad-input case compares a full scan of every table of the environment before and
after: a mistake must print one line (no traceback), exit 2 (or 1) and change nothing.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agents import FLOTILLA
from tests.support.aws import create_environment_stack, dynamodb_client, moto_server
from tests.support.cli import Cli as BaseCli

SECRET = "hunter2-very-secret"
WEB = "[Unit]\nAfter=docker.service\nRequires=docker.service\n[Service]\nExecStart=/usr/bin/web\n"
WORKER = "[Service]\nExecStart=/usr/bin/worker\n"


class Cli(BaseCli):
    def snapshot(self) -> dict[str, list[Any]]:
        client = dynamodb_client(self.endpoint)
        prefix = f"flotilla-{self.environment}-"
        tables = [t for t in client.list_tables()["TableNames"] if t.startswith(prefix)]
        assert len(tables) >= 5
        scans: dict[str, list[Any]] = {}
        for table in sorted(tables):
            items = client.scan(TableName=table, ConsistentRead=True)["Items"]
            scans[table] = sorted(
                items, key=lambda item: json.dumps(item, sort_keys=True, default=repr)
            )
        return scans


@pytest.fixture(scope="module")
def cli() -> Iterator[Cli]:
    environment = f"cli{os.getpid()}"
    with moto_server() as endpoint:
        create_environment_stack(environment, endpoint)
        yield Cli(endpoint, environment)


@pytest.fixture(scope="module")
def service(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Service `shop` with two revisions: `v1` from a directory, `v2` from a tar on stdin."""
    cli.ok("service", "create", "shop", "--max-in-flight", "25%", "--drain-timeout", "30")
    directory = tmp_path_factory.mktemp("v1")
    (directory / "web.service").write_text(WEB)
    (directory / "web.env").write_text(f"DB_PASSWORD='{SECRET}'\nPORT=8080\n")
    (directory / "worker.service").write_text(WORKER)
    (directory / "worker.env").write_text("QUEUE=jobs\n")
    v1 = cli.ok("revision", "add", "shop", str(directory), "--label", "v1").strip()
    assert len(v1) == 64
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in {
            "cache.env": f"DOCKER_IMAGE=redis:7\nDOCKER_PORT_6380=6379\nPASSWORD={SECRET}\n",
            "web.service": WEB,
        }.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data.encode())
            tar.addfile(info, io.BytesIO(data.encode()))
    added = json.loads(
        cli.ok(
            "revision", "add", "shop", "-", "--label", "v2", "-o", "json", stdin=archive.getvalue()
        )
    )
    assert added["label"] == "v2"
    return "shop"


def test_service_show_and_list(cli: Cli, service: str) -> None:
    shown = json.loads(cli.ok("service", "show", service, "--output", "json"))
    assert shown["rollout_policy"]["max_in_flight"] == "25%"
    assert shown["drain_timeout_seconds"] == 30
    assert shown["load_balancer"] is None
    listed = json.loads(cli.ok("service", "list", "-o", "json"))
    assert service in [s["name"] for s in listed]
    assert service in cli.ok("service", "list")


def test_service_update_changes_only_the_given_settings(cli: Cli) -> None:
    cli.ok("service", "create", "upd")
    updated = json.loads(
        cli.ok(
            "service", "update", "upd", "--load-balancer", "classic:web-elb", "--no-auto-revert",
            "--settle", "10", "-o", "json",
        )
    )  # fmt: skip
    assert updated["load_balancer"] == {"kind": "classic", "name": "web-elb"}
    assert updated["rollout_policy"]["failure_action"] == "hold"
    assert updated["settle_seconds"] == 10
    assert updated["drain_timeout_seconds"] == 300
    assert updated["version"] == 2
    cli.ok("service", "delete", "upd")
    assert "upd" not in [s["name"] for s in json.loads(cli.ok("service", "list", "-o", "json"))]


def test_a_health_check_is_set_tuned_shown_and_cleared(cli: Cli) -> None:
    shown = cli.ok("service", "create", "hc", "--health-check", "http:8080/health")
    assert "HTTP:8080/health (healthy 2, unhealthy 2, every 10 s, timeout 5 s)" in shown
    assert re.search(r"health period:\s+10s", shown), shown
    # Tuning alone tunes the stored check; the rest stays.
    tuned = json.loads(cli.ok("service", "update", "hc", "--health-interval", "30", "-o", "json"))
    assert tuned["health_check"] == {
        "protocol": "HTTP",
        "port": 8080,
        "path": "/health",
        "healthy_threshold": 2,
        "unhealthy_threshold": 2,
        "interval_seconds": 30,
        "timeout_seconds": 5,
    }
    # A timeout that is not shorter than the stored interval is refused, nothing stored.
    refused = cli.run("service", "update", "hc", "--health-check-timeout", "30")
    assert refused.returncode == 2
    assert "not shorter than its interval" in refused.stderr
    assert json.loads(cli.ok("service", "show", "hc", "-o", "json"))["version"] == tuned["version"]
    swapped = json.loads(
        cli.ok("service", "update", "hc", "--health-check", "default",
               "--health-command", "pgrep -x web", "--health-period", "20", "-o", "json")
    )  # fmt: skip
    assert swapped["health_check"] is None
    assert (swapped["health_command"], swapped["health_period_seconds"]) == ("pgrep -x web", 20)
    assert "pgrep -x web" in cli.ok("service", "show", "hc")
    cli.ok("service", "delete", "hc")


def test_revision_list_and_show_never_print_secret_values(cli: Cli, service: str) -> None:
    listed = json.loads(cli.ok("revision", "list", service, "-o", "json"))
    assert [r["label"] for r in listed] == ["v1", "v2"]
    v1, v2 = listed
    assert v1["variables"] == {
        "web.service": ["DB_PASSWORD", "PORT"],
        "worker.service": ["QUEUE"],
    }
    assert v2["units"] == ["cache.service", "web.service"]
    assert v2["variables"] == {"cache.service": ["PASSWORD"]}
    outputs = [
        cli.ok("revision", "list", service),
        cli.ok("revision", "show", service, "v1"),
        cli.ok("revision", "show", service, "v2", "--units"),
        cli.ok("revision", "show", service, "v2", "--units", "-o", "json"),
    ]
    for output in outputs:
        assert SECRET not in output
    assert "DB_PASSWORD" in outputs[1]
    assert "docker run" in outputs[2]  # the generated container unit
    assert "-e PASSWORD ${FLOTILLA_IMAGE}" in outputs[2]
    assert "Environment=FLOTILLA_IMAGE=redis:7" in outputs[2]


def test_revision_add_takes_hooks_and_show_lists_them(cli: Cli, tmp_path: Path) -> None:
    cli.ok("service", "create", "hooked")
    directory = tmp_path / "hooked"
    (directory / "hooks").mkdir(parents=True)
    (directory / "web.service").write_text(WEB)
    (directory / "hooks" / "validate").write_text("#!/bin/sh\ncurl -fsS localhost:8080\n")
    (directory / "hooks" / "after-start").write_text("echo warm\n")
    (directory / "hooks" / "timeouts").write_text("# seconds\nvalidate = 45\n")

    cli.ok("revision", "add", "hooked", str(directory), "--label", "h1")

    shown = json.loads(cli.ok("revision", "show", "hooked", "h1", "--units", "-o", "json"))
    assert shown["hooks"] == {"after-start": 300, "validate": 45}
    assert shown["hook_files"]["validate"] == "#!/bin/sh\ncurl -fsS localhost:8080\n"
    text = cli.ok("revision", "show", "hooked", "h1")
    assert "hooks:\n  after-start: timeout 300 s\n  validate: timeout 45 s" in text


def test_weights_by_label_and_by_id_prefix(cli: Cli, service: str) -> None:
    revisions = json.loads(cli.ok("revision", "list", service, "-o", "json"))
    v1, v2 = (r["id"] for r in revisions)
    cli.ok("weights", service, "v1=100")
    result = json.loads(cli.ok("weights", service, f"{v2[:8]}=25", "v1=75", "-o", "json"))
    assert {w["id"]: w["weight"] for w in result["weights"]} == {v1: 75, v2: 25}
    shown = json.loads(cli.ok("service", "show", service, "-o", "json"))
    assert shown["weights"] == {v1: 75, v2: 25}  # ids, for scripts
    assert shown["labels"] == {v1: "v1", v2: "v2"}
    assert "v2" in cli.ok("weights", service, "v2=25")
    # People read labels, as `rollout status` shows them.
    assert re.search(r"weights: +v1=75, v2=25", cli.ok("service", "show", service))
    listed = [line for line in cli.ok("service", "list").splitlines() if line.startswith(service)]
    assert "v1=75, v2=25" in listed[0]
    assert v1[:12] not in listed[0]


def assert_refused(
    cli: Cli, *args: str, code: int = 2, stdin: bytes | None = None, **kw: Any
) -> str:
    before = cli.snapshot()
    result = cli.run(*args, stdin=stdin, **kw)
    after = cli.snapshot()
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert after == before
    return lines[0]


def test_weights_mistakes_change_nothing(cli: Cli, service: str, tmp_path: Path) -> None:
    assert "invalid weight" in assert_refused(cli, "weights", service, "v1=-3")
    assert "invalid weight" in assert_refused(cli, "weights", service, "v1=10", "v2=lots")
    assert "no revision labelled 'v9'" in assert_refused(cli, "weights", service, "v1=5", "v9=5")
    assert "REVISION=WEIGHT" in assert_refused(cli, "weights", service, "v1")
    assert "REVISION=WEIGHT" in assert_refused(cli, "weights", service, "=5")
    assert "named twice" in assert_refused(cli, "weights", service, "v1=5", "v1=6")
    assert "does not exist" in assert_refused(cli, "weights", "nosuch", "v1=5", code=1)


def test_a_label_always_names_its_own_revision(cli: Cli, tmp_path: Path) -> None:
    from flotilla.engine.revisions import revision_id

    cli.ok("service", "create", "amb")
    (tmp_path / "web.service").write_text(WORKER)
    first = cli.ok("revision", "add", "amb", str(tmp_path), "--label", "one").strip()
    # A second revision labelled with a prefix of the first one's id: the label wins.
    (tmp_path / "web.service").write_text(WEB)
    second = cli.ok("revision", "add", "amb", str(tmp_path), "--label", first[:6]).strip()
    stored = json.loads(cli.ok("weights", "amb", f"{first[:6]}=5", "-o", "json"))
    assert [w["id"] for w in stored["weights"]] == [second]
    # The first is still named by a longer prefix of its id, or by its own label.
    stored = json.loads(cli.ok("weights", "amb", f"{first[:12]}=7", "-o", "json"))
    assert {w["id"]: w["weight"] for w in stored["weights"]}[first] == 7
    stored = json.loads(cli.ok("weights", "amb", "one=8", "-o", "json"))
    assert {w["id"]: w["weight"] for w in stored["weights"]}[first] == 8
    assert "named twice" in assert_refused(cli, "weights", "amb", f"{first[:12]}=7", "one=7")
    # A label like `b` beside an id starting b...: find content whose id starts with b.
    for n in range(400):
        text = f"[Service]\nExecStart=/usr/bin/web --build {n}\n"
        if revision_id("amb", {"web.service": text}, None).startswith("b"):
            break
    (tmp_path / "web.service").write_text(text)
    cli.ok("revision", "add", "amb", str(tmp_path), "--label", "build-7")
    (tmp_path / "web.service").write_text(WEB + "Restart=always\n")
    labelled_b = cli.ok("revision", "add", "amb", str(tmp_path), "--label", "b").strip()
    stored = json.loads(cli.ok("weights", "amb", "b=100", "-o", "json"))
    assert {w["id"]: w["weight"] for w in stored["weights"]}[labelled_b] == 100
    # Labels name one revision each; 64 hex digits would read as a whole id.
    (tmp_path / "web.service").write_text(WEB + "Restart=on-failure\n")
    assert "already has a revision labelled 'b'" in assert_refused(
        cli, "revision", "add", "amb", str(tmp_path), "--label", "b"
    )
    assert "64 hex digits" in assert_refused(
        cli, "revision", "add", "amb", str(tmp_path), "--label", "a" * 64
    )
    # Without --label, a revision is labelled with the time it was added.
    added = json.loads(cli.ok("revision", "add", "amb", str(tmp_path), "-o", "json"))
    assert re.fullmatch(r"20[0-9]{6}-[0-9]{6}(-[0-9]+)?", added["label"])


def test_revision_add_checks_units_the_way_systemd_reads_them(cli: Cli, tmp_path: Path) -> None:
    cli.ok("service", "create", "units")
    typo = tmp_path / "typo"
    typo.mkdir()
    (typo / "web.service").write_text(
        "[Service]\nExecStartt=/usr/bin/web\nExecStart=/usr/bin/web\n"
    )
    line = assert_refused(cli, "revision", "add", "units", str(typo), "--label", "t1")
    assert "web.service, line 2: unknown key ExecStartt= in [Service]" in line
    assert "(did you mean ExecStart=?)" in line
    assert "--force" in line
    forced = cli.run("revision", "add", "units", str(typo), "--label", "t1", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "warning: --force: web.service, line 2: unknown key ExecStartt=" in forced.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "web.service").write_text("[Service]\nExecStartt=/usr/bin/web\n")
    for force in ([], ["--force"]):
        line = assert_refused(cli, "revision", "add", "units", str(empty), "--label", "e1", *force)
        assert "a service needs ExecStart=" in line
        assert "--force cannot help" in line
    # systemd-analyze knows values too (this machine has it: Debian's systemd).
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "web.service").write_text("[Service]\nExecStart=/usr/bin/web\nRestart=sometimes\n")
    line = assert_refused(cli, "revision", "add", "units", str(odd), "--label", "o1")
    assert "web.service, line 3: systemd-analyze: Failed to parse service restart" in line


def test_revision_add_mistakes_change_nothing(cli: Cli, service: str, tmp_path: Path) -> None:
    assert "does not exist" in assert_refused(
        cli, "revision", "add", service, str(tmp_path / "missing")
    )
    (tmp_path / "web.service").write_bytes(b"\x00\x01\x02garbage")
    assert "binary" in assert_refused(cli, "revision", "add", service, str(tmp_path))
    (tmp_path / "web.service").write_text(WEB)
    assert "already has a revision labelled 'v1'" in assert_refused(
        cli, "revision", "add", service, str(tmp_path), "--label", "v1"
    )
    assert "not a readable tar" in assert_refused(
        cli, "revision", "add", service, "-", stdin=b"not a tar at all" * 100
    )
    (tmp_path / "notes.txt").write_text("hello")
    assert "unknown kind of file" in assert_refused(cli, "revision", "add", service, str(tmp_path))
    (tmp_path / "notes.txt").unlink()
    assert "invalid revision label" in assert_refused(
        cli, "revision", "add", service, str(tmp_path), "--label", "bad label!"
    )
    assert "does not exist" in assert_refused(
        cli, "revision", "add", "nosuch", str(tmp_path), code=1
    )
    assert "no AWS region" in assert_refused(
        cli, "revision", "add", service, str(tmp_path), code=1, with_region=False
    )


def test_service_mistakes_change_nothing(cli: Cli, service: str) -> None:
    assert "invalid service name" in assert_refused(cli, "service", "create", "Bad_Name")
    assert "--load-balancer" in assert_refused(
        cli, "service", "create", "lb", "--load-balancer", "alb:thing"
    )
    assert "max_in_flight" in assert_refused(
        cli, "service", "update", service, "--max-in-flight", "0"
    )
    assert "drain timeout" in assert_refused(
        cli, "service", "update", service, "--drain-timeout", "-1"
    )
    assert "exists already" in assert_refused(cli, "service", "create", service, code=1)
    assert "flotilla service create" in assert_refused(cli, "service", "show", "nosuch", code=1)
    assert "changed meanwhile" in assert_refused(
        cli, "service", "delete", service, "--expected-version", "999", code=1
    )
    assert "no revision" in assert_refused(cli, "revision", "show", service, "zzz")


def test_every_command_has_help(cli: Cli) -> None:
    for command in (
        ["service", "create"], ["service", "update"], ["service", "show"], ["service", "list"],
        ["service", "delete"], ["revision", "add"], ["revision", "list"], ["revision", "show"],
        ["weights"],
    ):  # fmt: skip
        result = subprocess.run(
            [FLOTILLA, *command, "--help"], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout


def test_adding_the_same_content_again_says_so_and_stores_nothing(
    cli: Cli, service: str, tmp_path: Path
) -> None:
    (tmp_path / "worker.service").write_text(WORKER)  # no environment: same content, same id
    first = cli.ok("revision", "add", service, str(tmp_path), "--label", "plain").strip()
    before = cli.snapshot()
    again = cli.run("revision", "add", service, str(tmp_path), "--label", "plain-again")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == first
    assert "already revision" in again.stderr
    assert "'plain'" in again.stderr
    assert cli.snapshot() == before
