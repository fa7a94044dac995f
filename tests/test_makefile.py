"""The Makefile as a user meets it: `make help` lists every setting, settings carry through
to the recipes, and the rollout targets keep the tool's exit code where make cannot."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.rollout.fake_prometheus import HEALTHY, QUIET, CannedPrometheus
from tests.support import REPO_ROOT

MAKEFILE = (REPO_ROOT / "Makefile").read_text()
SETTINGS = re.findall(r"^([A-Z0-9_]+) \?= ?(.*)$", MAKEFILE, flags=re.MULTILINE)
VENV = Path(sys.executable).parent.parent
# Never let a test reinstall the virtualenv: its stamp counts as up to date.
MAKE = [
    "make",
    "--no-print-directory",
    *("-o", f"{VENV}/.installed", "-o", f"{VENV}/.installed-demo"),
    f"VENV={VENV}",
]


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAKE, *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=120
    )


def test_make_help_lists_every_setting_with_its_default_and_a_description() -> None:
    done = make("help")
    assert done.returncode == 0, done.stderr
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
    listed = text.split("\nSettings (make NAME=value, or the environment)\n", 1)[1]
    rows = {
        m.group(1): (m.group(2).strip(), m.group(3))
        for m in re.finditer(r"^  ([A-Z0-9_]+) +(.*) \[(.*)\]$", listed, flags=re.MULTILINE)
    }
    assert len(SETTINGS) > 50
    for name, default in SETTINGS:
        assert name in rows, f"make help does not list {name}"
        description, shown = rows[name]
        assert len(description) > 10, f"{name} has no description"
        assert shown == (default.strip() or "empty"), name
    assert "\nSettings\n\n" not in text  # no empty section left


def test_make_analyze_follows_prometheus_port() -> None:
    done = make("-n", "analyze", "PROMETHEUS_PORT=9391")
    assert done.returncode == 0, done.stderr
    assert "--prometheus-url http://127.0.0.1:9391" in done.stdout
    override = make("-n", "analyze", "PROMETHEUS_URL=http://prometheus.example:80")
    assert "--prometheus-url http://prometheus.example:80" in override.stdout


@pytest.mark.integration
@pytest.mark.parametrize(("canary", "code"), [(QUIET, 3), (HEALTHY, 0)])
def test_the_rollout_targets_keep_the_tools_exit_code(
    tmp_path: Path, canary: object, code: int
) -> None:
    """make answers 2 for any failure; the tool's verdict (3 inconclusive) is in the file."""
    exit_file = tmp_path / "exit-code"
    with CannedPrometheus({"1": HEALTHY, "2": canary}).running() as prometheus:  # type: ignore[dict-item]
        done = make(
            "analyze",
            f"PROMETHEUS_URL={prometheus.url}",
            f"ROLLOUT_EXIT_FILE={exit_file}",
            "ROLLOUT_ARGS=--stable 1 --canary 2",
        )
    assert exit_file.read_text().strip() == str(code)
    if code == 0:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 2  # GNU make's own
        assert f"python -m rollout exited {code}" in done.stderr
        assert str(exit_file) in done.stderr


def dry_run(target: str, venv: Path) -> str:
    """What `make TARGET` would run for a fresh virtualenv (`make -n`)."""
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", target, f"VENV={venv}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_demo_installs_only_what_it_runs_says_so_and_shows_pip_s_progress(
    tmp_path: Path,
) -> None:
    script = dry_run("demo-venv", tmp_path / "fresh")
    [install] = [line for line in script.splitlines() if "pip install" in line and " -e " in line]
    assert "-e '.[demo]'" in install and "[test]" not in script
    assert "--quiet" not in script and "--progress-bar on" in install
    assert "First run: installing what the demo runs" in script
    assert re.search(r"Roughly \d+-\d+ minutes", script)
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    demo = {re.split(r"[<>=\[ ]", r, maxsplit=1)[0] for r in extras["demo"]}
    # locust for the load tests; starlette, httpx and uvicorn for the local router.
    assert demo == {"locust", "starlette", "httpx", "uvicorn"}, (
        "the demo extra holds what the demo runs, no test tool"
    )
    for target in ("demo", "loadtest", "train-local"):
        rule = re.search(rf"^{target}: (\S+)", MAKEFILE, flags=re.MULTILINE)
        assert rule and rule.group(1) == "demo-venv", target


def test_make_test_still_installs_the_test_extras(tmp_path: Path) -> None:
    script = dry_run("venv", tmp_path / "fresh")
    assert "pip install --quiet -e '.[test]'" in script, script
    assert re.search(r"^test: venv", MAKEFILE, flags=re.MULTILINE)
