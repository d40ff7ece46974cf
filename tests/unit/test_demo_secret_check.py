"""The demo's secret check finds a planted leak, and accepts only 0600 environment files."""

from __future__ import annotations

from pathlib import Path

from flotilla.cli.demo.secret_check import check_secret

SECRET = "demo-secret-0123456789abcdef"


def test_planted_leaks_are_found_and_0600_env_files_are_not_leaks(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "agent.log").write_text(f"deploying with {SECRET}\n")
    (tmp_path / "logs" / "clean.log").write_text("nothing here\n")
    env = tmp_path / "instances" / "demo-1" / "env"
    env.mkdir(parents=True)
    (env / "web.env").write_text(f"TOKEN={SECRET}\n")
    (env / "web.env").chmod(0o600)
    (env / "open.env").write_text(f"TOKEN={SECRET}\n")
    (env / "open.env").chmod(0o644)
    (tmp_path / "revisions").mkdir()
    (tmp_path / "revisions" / "web.env").write_text(f"TOKEN={SECRET}\n")  # the input: skipped

    report = check_secret(SECRET, tmp_path, ["ok", f"printed {SECRET}"], None, [])

    assert not report.clean
    assert sorted(report.leaks) == sorted(
        [
            "file logs/agent.log (mode 644)",
            "file instances/demo-1/env/open.env (mode 644)",
            "the output of CLI command #2",
        ]
    )
    assert report.env_files == [Path("instances/demo-1/env/web.env")]
    assert report.places_checked == 6  # 4 files outside revisions/, 2 outputs


def test_nothing_planted_is_clean(tmp_path: Path) -> None:
    (tmp_path / "spans.jsonl").write_text("{}\n")
    report = check_secret(SECRET, tmp_path, ["fine"], None, [])
    assert report.clean
    assert report.places_checked == 2
