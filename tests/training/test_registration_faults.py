"""Registration is honest and idempotent, proven against a real `mlflow server` behind
a proxy that fails each MLflow call of the Job in turn (tests/training/fault_proxy.py).

After any failure: the Job exits 4 naming the failed step in one line, with no
traceback, and no version claims `gate_status=passed` without `@challenger` on it. A
retry of the same Job (the same `TRAINING_JOB_UID`, as the Job's backoffLimit re-runs
its container) then ends registered with exactly one version."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from mlflow import MlflowClient

from contract import registry_tags
from contract.uris import CHALLENGER, CHAMPION
from tests.support import PYTHON, REPO_ROOT, MlflowServer, running_mlflow
from tests.training.fault_proxy import Faults, fault_proxy

pytestmark = pytest.mark.integration

# A cheap Job: one family, the smoke grid; the calls it makes are those of any Job.
# Each Job here takes about 30 s on two busy cores: the cases below are chosen, not all.
JOB_ARGS = ("--smoke", "--candidates", "logreg", "--registry-timeout", "5")


@dataclass
class Job:
    exit_code: int
    summary: dict[str, Any]
    stderr: str


def run_job(url: str, model: str, job_uid: str) -> Job:
    done = subprocess.run(
        [PYTHON, "-m", "training", "--tracking-uri", url, "--model-name", model, *JOB_ARGS],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        check=False,
        # No client retries: a failing call fails at once (the retries are tested apart).
        env={
            **os.environ,
            "TRAINING_JOB_UID": job_uid,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        },
    )
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr
    return Job(done.returncode, json.loads(lines[-1]), done.stderr)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with running_mlflow(tmp_path_factory.mktemp("registration-mlflow")) as running:
        yield running


@pytest.fixture(scope="module")
def calls(server: MlflowServer) -> list[str]:
    """Every distinct MLflow call of one clean Job, in the order it first makes them."""
    faults = Faults()
    with fault_proxy(server.url, faults) as url:
        job = run_job(url, "clean", "job-clean")
    assert job.exit_code == 0, job.stderr
    return list(dict.fromkeys(faults.calls))


def versions(server: MlflowServer, model: str) -> list[Any]:
    return list(MlflowClient(server.url).search_model_versions(f"name = '{model}'"))


def assert_honest(server: MlflowServer, model: str) -> None:
    """No version says it passed unless @challenger points at it."""
    client = MlflowClient(server.url)
    for version in versions(server, model):
        if version.tags.get(registry_tags.GATE_STATUS) == registry_tags.GATE_PASSED:
            challenger = client.get_model_version_by_alias(model, CHALLENGER)
            assert challenger.version == version.version, version


REGISTRATION_FROM = "/registration.json"
"""The plan is the last thing logged before the version is created: from it on, every
call is one of the registration's own, and each is failed in turn."""
EARLY = (
    "POST /api/2.0/mlflow/runs/create",
    "POST /api/2.0/mlflow/runs/log-batch",
    "GET /api/2.0/mlflow/registered-models/alias",
    "POST /api/2.0/mlflow/logged-models",
)
"""Before it, a sample of one call per kind of step (start the run, log, read @champion,
log the model): every earlier call runs in the same `registry.step`, so what matters
there is the exit code and the one line, not what the registry holds."""
RETRIED = (
    "POST /api/2.0/mlflow/model-versions/create",  # no version yet: the retry makes one
    "POST /api/2.0/mlflow/registered-models/alias",  # pending: the retry finishes it
    "POST /api/2.0/mlflow/runs/set-tag",  # aliases moved, version passed: a no-op finish
)


def failed_in_turn(calls: list[str]) -> list[str]:
    start = next(i for i, call in enumerate(calls) if call.endswith(REGISTRATION_FROM))
    return [*EARLY, *calls[start:]]


def test_a_clean_job_makes_the_calls_a_registration_needs(calls: list[str]) -> None:
    registration = failed_in_turn(calls)
    assert set(EARLY) <= set(calls), calls
    assert set(RETRIED) <= set(registration), registration
    assert len(registration) >= 10


def test_each_failing_call_exits_4_in_one_line_and_claims_nothing(
    server: MlflowServer, calls: list[str]
) -> None:
    failures = []
    for index, call in enumerate(failed_in_turn(calls)):
        model, job_uid = f"fail-{index}", f"job-{index}"
        with fault_proxy(server.url, Faults(fail=call)) as url:
            failed = run_job(url, model, job_uid)
        problems = []
        if failed.exit_code != 4:
            problems.append(f"exit {failed.exit_code}")
        if "Traceback" in failed.stderr:
            problems.append("a traceback")
        if "failed to " not in failed.summary.get("error", ""):
            problems.append(f"no step named: {failed.summary}")
        assert_honest(server, model)
        if call in RETRIED:
            retried = run_job(server.url, model, job_uid)
            count = len(versions(server, model))
            if retried.exit_code != 0 or count != 1:
                problems.append(f"retry: exit {retried.exit_code}, {count} versions")
            assert_honest(server, model)
        if problems:
            failures.append(f"{call}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)


def test_mlflow_dying_right_after_the_version_is_created(server: MlflowServer) -> None:
    model, job_uid = "dies", "job-dies"
    faults = Faults(die_after="POST /api/2.0/mlflow/model-versions/create")
    with fault_proxy(server.url, faults) as url:
        failed = run_job(url, model, job_uid)
    assert failed.exit_code == 4, failed.stderr
    assert "Traceback" not in failed.stderr
    [created] = versions(server, model)
    assert created.tags[registry_tags.GATE_STATUS] == registry_tags.GATE_PENDING
    assert_honest(server, model)

    retried = run_job(server.url, model, job_uid)

    assert retried.exit_code == 0, retried.stderr
    assert (retried.summary["version"], retried.summary["resumed"]) == (created.version, True)
    [finished] = versions(server, model)
    assert finished.tags[registry_tags.GATE_STATUS] == registry_tags.GATE_PASSED
    assert "Passed every gate" in finished.description
    client = MlflowClient(server.url)
    for alias in (CHALLENGER, CHAMPION):
        assert client.get_model_version_by_alias(model, alias).version == created.version


def test_without_a_job_identity_every_run_is_a_new_version(server: MlflowServer) -> None:
    for _ in range(2):
        assert run_job(server.url, "local", "").exit_code == 0
    assert len(versions(server, "local")) == 2
