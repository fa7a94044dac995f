"""The exact HTTP requests the `kubernetes` client sends for each command.

No API server runs here: a local recorder answers like one (fake_apiserver.py),
reached through a kubeconfig, while the registry is a real `mlflow server`. The
e2e tier runs the same commands against kind.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rollout import queries
from rollout.__main__ import main
from rollout.lock import micro_time
from tests.rollout.fake_apiserver import FakeApiServer, Recorded, inference_service
from tests.rollout.fake_prometheus import (
    ERRORING,
    GARBAGE,
    HEALTHY,
    QUIET,
    CannedPrometheus,
    VersionNumbers,
)
from tests.rollout.helpers import NAMESPACE, TOKEN, RegistryModel, isvc_path
from tests.support import REPO_ROOT, last_json, wait_until

pytestmark = pytest.mark.integration

Cli = Callable[..., tuple[int, str]]


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    registry_model: RegistryModel,
    kubeconfig: Path,
) -> Cli:
    """Run `python -m rollout COMMAND ...` in-process; (exit code, stdout)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

    def run(command: str, *args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(
            [
                command,
                "--model-name",
                registry_model.name,
                "--tracking-uri",
                registry_model.tracking_uri,
                "--kubeconfig",
                str(kubeconfig),
                "--isvc",
                registry_model.name,
                *args,
            ]
        )
        return code, capsys.readouterr().out

    return run


def containers_serving(obj: dict[str, Any], uri: str) -> list[dict[str, Any]]:
    """The object's containers list with MODEL_URI set to `uri` (what a patch must carry)."""
    containers = copy.deepcopy(obj["spec"]["predictor"]["containers"])
    for entry in containers[0]["env"]:
        if entry["name"] == "MODEL_URI":
            entry["value"] = uri
    return containers


def traffic_body(resource_version: str, percent: int | None) -> dict[str, Any]:
    return {
        "metadata": {"resourceVersion": resource_version},
        "spec": {"predictor": {"canaryTrafficPercent": percent}},
    }


def assert_merge_patch(request: Recorded, path: str) -> None:
    assert (request.method, request.path) == ("PATCH", path)
    assert request.content_type == "application/merge-patch+json"
    assert request.query == {"fieldManager": ["mlops-rollout"]}
    assert request.authorization == f"Bearer {TOKEN}"


def test_status_is_one_get_and_reports_both_versions(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any, registry_model: RegistryModel
) -> None:
    path = make_isvc("2", 10)
    code, out = cli("status")
    assert code == 0
    lease = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{name_of(path)}-rollout"
    assert [(r.method, r.path, r.authorization) for r in fake_api.requests] == [
        ("GET", path, f"Bearer {TOKEN}"),
        ("GET", lease, f"Bearer {TOKEN}"),  # the auto lock: none here
    ]
    assert "auto lock               free (no auto runs on it)" in out
    name = registry_model.name
    assert last_json(out) == {
        "namespace": NAMESPACE,
        "name": name,
        "ready": True,
        "model_uri": f"models:/{name}/2",
        "stable_version": "1",
        "canary_version": "2",
        "canary_percent": 10,
        "stable_revision": f"{name}-predictor-00001",
        "latest_ready_revision": f"{name}-predictor-00002",
        "traffic": [
            {"revision": f"{name}-predictor-00002", "percent": 10, "latest": True, "tag": None},
            {"revision": f"{name}-predictor-00001", "percent": 90, "latest": False, "tag": "prev"},
        ],
        "aliases": {"challenger": "2", "champion": "1"},
        "auto_lock": None,
    }
    assert "canary                version 2 at 10 %" in out


def name_of(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def test_status_names_the_auto_that_holds_the_lock(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any, registry_model: RegistryModel
) -> None:
    make_isvc("2", 10)
    lease = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"
    fake_api.put(
        f"{lease}/{registry_model.name}-rollout",
        {
            "metadata": {"name": f"{registry_model.name}-rollout", "namespace": NAMESPACE,
                         "annotations": {"mlops-rollout/version": "2"}},
            "spec": {"holderIdentity": "ci:42:abcd", "leaseDurationSeconds": 180,
                     "renewTime": micro_time(time.time() - 5)},
        },
    )  # fmt: skip
    code, out = cli("status")
    assert code == 0
    lock = last_json(out)["auto_lock"]
    assert (lock["holder"], lock["version"], lock["expired"]) == ("ci:42:abcd", "2", False)
    assert 4 <= lock["renewed_seconds_ago"] < 60
    assert "auto lock               held: ci:42:abcd rolling out 2, renewed" in out


def test_status_without_permission_on_leases_still_answers(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any
) -> None:
    make_isvc("1")
    fake_api.forbidden_verbs = {"get leases"}
    code, out = cli("status")
    assert code == 0
    assert "HTTP 403" in last_json(out)["auto_lock"]["unknown"]
    assert "auto lock               unknown (" in out


def test_start_sends_one_merge_patch_with_the_whole_containers_list(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any, registry_model: RegistryModel
) -> None:
    path = make_isvc("1")
    before = fake_api.get(path)
    new_uri = f"models:/{registry_model.name}/2"

    code, out = cli("start", "--alias", "challenger", "--percent", "10")

    assert code == 0, out
    assert fake_api.methods() == ["GET", "PATCH"]
    patch = fake_api.requests[1]
    assert_merge_patch(patch, path)
    assert patch.body == {
        "metadata": {"resourceVersion": "1000"},
        "spec": {
            "predictor": {
                "canaryTrafficPercent": 10,
                "containers": containers_serving(before, new_uri),
            }
        },
    }
    after = fake_api.get(path)
    assert after["spec"]["predictor"] == {
        **before["spec"]["predictor"],
        "canaryTrafficPercent": 10,
        "containers": containers_serving(before, new_uri),
    }
    assert after["metadata"]["annotations"] == before["metadata"]["annotations"]
    assert last_json(out) == {
        "action": "start",
        "version": "2",
        "stable_version": "1",
        "percent": 10,
        "model_uri": new_uri,
        "dry_run": False,
    }


REFUSALS = [
    ("1", None, ["--version", "1"], "version 1 is already stable"),
    ("1", None, ["--version", "99"], "version 99 of model .* does not exist"),
    ("1", None, ["--alias", "nope"], "has no alias @nope"),
    ("2", 10, ["--version", "3"], "a canary of version 2 is already running at 10 %"),
]


@pytest.mark.parametrize("refusal", REFUSALS, ids=["stable", "missing", "no-alias", "running"])
def test_start_refuses_without_patching(
    cli: Cli,
    fake_api: FakeApiServer,
    make_isvc: Any,
    caplog: pytest.LogCaptureFixture,
    refusal: tuple[str, int | None, list[str], str],
) -> None:
    spec_version, percent, args, message = refusal
    make_isvc(spec_version, percent)
    code, _ = cli("start", *args)
    assert code == 2
    assert fake_api.patches() == []
    assert any(re.search(message, r.getMessage()) for r in caplog.records), caplog.text


def test_start_dry_run_asks_the_server_for_a_dry_run_and_changes_nothing(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any, registry_model: RegistryModel
) -> None:
    path = make_isvc("1")
    before = fake_api.get(path)
    revision = fake_api.revision
    code, out = cli("start", "--version", "3", "--percent", "20", "--dry-run")
    assert code == 0
    assert fake_api.calls() == ["GET", "PATCH dry-run"]
    assert fake_api.requests[1].query == {"dryRun": ["All"], "fieldManager": ["mlops-rollout"]}
    assert fake_api.requests[1].body == json.loads(out.splitlines()[0])["body"]
    printed = json.loads(out.splitlines()[0])
    assert printed == {
        "dry_run": True,
        "method": "PATCH",
        "path": path,
        "content_type": "application/merge-patch+json",
        "body": {
            "metadata": {"resourceVersion": "1000"},
            "spec": {
                "predictor": {
                    "canaryTrafficPercent": 20,
                    "containers": containers_serving(before, f"models:/{registry_model.name}/3"),
                }
            },
        },
    }
    assert fake_api.get(path) == before
    assert fake_api.revision == revision  # nothing was written anywhere


def test_a_read_only_identity_fails_at_the_dry_run(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The point of a server-side dry run: RBAC answers it as it would the real write."""
    path = make_isvc("1")
    before = fake_api.get(path)
    fake_api.forbidden_verbs = {"patch", "create", "update", "delete"}
    code, out = cli("start", "--version", "2", "--dry-run")
    assert code == 4
    assert fake_api.calls() == ["GET", "PATCH dry-run"]
    assert "not allowed to patch" in caplog.text
    assert "get and patch on inferenceservices" in caplog.text
    assert out == ""  # no patch is printed as if it would work
    assert fake_api.get(path) == before


def test_promote_deletes_the_percent_and_moves_champion(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any, registry_model: RegistryModel
) -> None:
    path = make_isvc("2", 10)
    code, out = cli("promote")
    assert code == 0, out
    assert fake_api.methods() == ["GET", "PATCH"]
    patch = fake_api.requests[1]
    assert_merge_patch(patch, path)
    assert patch.body == {
        "metadata": {"resourceVersion": "1000"},
        "spec": {"predictor": {"canaryTrafficPercent": None}},
    }
    assert b'"canaryTrafficPercent": null' in patch.raw_body
    assert "canaryTrafficPercent" not in fake_api.get(path)["spec"]["predictor"]
    assert registry_model.aliases() == {"champion": "2", "challenger": "2"}
    assert registry_model.tags("2")["rollout_status"] == "promoted"


def test_promote_without_a_canary_is_refused(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any, registry_model: RegistryModel
) -> None:
    make_isvc("1")
    code, _ = cli("promote")
    assert code == 2
    assert fake_api.patches() == []
    assert registry_model.aliases()["champion"] == "1"


def test_rollback_cuts_traffic_first_then_restores_stable_and_tags_the_version(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any, registry_model: RegistryModel
) -> None:
    path = make_isvc("2", 10)
    before = fake_api.get(path)
    code, out = cli("rollback", "--reason", "p99 too high in the demo")
    assert code == 0, out
    # Traffic, restore; then a read shows the restored revision Ready, and the 0 goes.
    assert fake_api.methods() == ["GET", "PATCH", "PATCH", "GET", "PATCH"]
    first, second = fake_api.requests[1], fake_api.requests[2]
    assert_merge_patch(first, path)
    assert first.body == {
        "metadata": {"resourceVersion": "1000"},
        "spec": {"predictor": {"canaryTrafficPercent": 0}},
    }
    assert_merge_patch(second, path)
    stable_uri = f"models:/{registry_model.name}/1"
    assert second.body == {
        "metadata": {"resourceVersion": "1001"},  # the version the first patch returned
        "spec": {"predictor": {"containers": containers_serving(before, stable_uri)}},
    }
    third = fake_api.patches()[2]  # the restored revision is Ready: the 0 goes
    assert third.body == {
        "metadata": {"resourceVersion": "1002"},
        "spec": {"predictor": {"canaryTrafficPercent": None}},
    }
    after = fake_api.get(path)["spec"]["predictor"]
    assert "canaryTrafficPercent" not in after
    assert after["containers"] == containers_serving(before, stable_uri)
    assert registry_model.aliases() == {"champion": "1", "challenger": "2"}
    tags = registry_model.tags("2")
    assert (tags["rollout_status"], tags["rollout_reason"]) == (
        "rejected",
        "p99 too high in the demo",
    )
    # The rejected version is not started again by accident.
    code, _ = cli("start", "--version", "2")
    assert code == 2
    assert len(fake_api.patches()) == 3


def test_a_status_write_between_read_and_patch_is_retried(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rollout")
    make_isvc("1")
    fake_api.status_writes_before_next_patch = 1
    code, out = cli("start", "--version", "2")
    assert code == 0, out
    assert fake_api.methods() == ["GET", "PATCH", "GET", "PATCH"]
    assert [r.body["metadata"]["resourceVersion"] for r in fake_api.patches()] == [
        "1000",
        "1001",
    ]
    assert "409 conflict on attempt 1: status changed since we read it" in caplog.text


def test_the_conflict_log_names_the_metadata_that_changed(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rollout")
    make_isvc("1")
    fake_api.edits_before_next_patch = [
        {"metadata": {"labels": {"team": "fraud"}, "annotations": {"note": "x"}}}
    ]
    code, out = cli("start", "--version", "2")
    assert code == 0, out
    assert "409 conflict on attempt 1: metadata.annotations, metadata.labels changed" in (
        caplog.text
    )
    assert "(status update)" not in caplog.text


def test_conflicts_back_off_with_jitter_before_each_retry(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rollout")
    """An object the controller writes between every read and patch: the retries spread
    out (0.1-0.2 s, then 0.2-0.4 s, ...) instead of being spent within milliseconds."""
    make_isvc("1")
    fake_api.status_writes_before_next_patch = 3
    code, out = cli("start", "--version", "2")
    assert code == 0, out
    patches = fake_api.patches()
    assert len(patches) == 4
    gaps = [b.at - a.at for a, b in itertools.pairwise(patches)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4, gaps
    delays = [float(d) for d in re.findall(r"retrying in ([0-9.]+)s", caplog.text)]
    assert len(delays) == 3
    assert 0.1 <= delays[0] <= 0.2 and 0.2 <= delays[1] <= 0.4 and 0.4 <= delays[2] <= 0.8


def test_an_object_that_never_stops_changing_gives_up_with_exit_4(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    path = make_isvc("1")
    fake_api.status_writes_before_next_patch = 99
    code, _ = cli("start", "--version", "2")
    assert code == 4
    assert len(fake_api.patches()) == 5
    assert re.search(r"kept changing: 5 attempts over [0-9.]+s", caplog.text)
    assert "canaryTrafficPercent" not in fake_api.get(path)["spec"]["predictor"]


def test_a_spec_change_by_someone_else_is_never_overwritten(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any
) -> None:
    path = make_isvc("1")
    fake_api.spec_edit_before_next_patch = {"spec": {"predictor": {"minReplicas": 3}}}
    code, _ = cli("start", "--version", "2")
    assert code == 4
    assert fake_api.methods() == ["GET", "PATCH", "GET"]
    after = fake_api.get(path)["spec"]["predictor"]
    assert after["minReplicas"] == 3
    assert "canaryTrafficPercent" not in after


def test_an_unknown_isvc_is_a_clear_usage_error(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    make_isvc("1")
    code, _ = cli("status", "--namespace", "elsewhere")
    assert code == 2
    assert fake_api.requests[0].path.startswith(
        "/apis/serving.kserve.io/v1beta1/namespaces/elsewhere/"
    )
    assert "not found" in caplog.text and "--namespace" in caplog.text


def test_an_isvc_without_status_is_refused_for_start_and_promote(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Fresh from Helm, no controller yet: `ready=None` must not read as good enough."""
    path = make_isvc("2", 10)
    obj = fake_api.get(path)
    del obj["status"]
    fake_api.put(path, obj)
    assert cli("promote")[0] == 2
    assert "has no Ready condition yet" in caplog.text
    obj["spec"]["predictor"]["containers"][0]["env"][2]["value"] = obj["spec"]["predictor"][
        "containers"
    ][0]["env"][2]["value"].replace("/2", "/1")
    del obj["spec"]["predictor"]["canaryTrafficPercent"]
    fake_api.put(path, obj)
    caplog.clear()
    assert cli("start", "--version", "2")[0] == 2
    assert "refusing to start a canary" in caplog.text
    assert fake_api.patches() == []


@pytest.mark.parametrize("via", ["flag", "env"])
def test_a_kubeconfig_that_does_not_exist_is_refused_with_its_path(
    fake_api: FakeApiServer,
    registry_model: RegistryModel,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    via: str,
) -> None:
    """No silent fall-through to the pod's service account (another cluster, maybe)."""
    missing = tmp_path / "no-such-kubeconfig"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")  # as inside a pod
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    args = ["--kubeconfig", str(missing)] if via == "flag" else []
    if via == "env":
        monkeypatch.setenv("KUBECONFIG", str(missing))
    code = main(["status", "--model-name", registry_model.name, *args])
    assert code == 2
    assert f"the kubeconfig {missing} does not exist" in caplog.text
    assert fake_api.requests == []


def test_an_unreachable_api_server_is_exit_4(
    cli: Cli, kubeconfig: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.support import free_port

    kubeconfig.write_text(
        kubeconfig.read_text().replace(
            kubeconfig.read_text().split("server: ")[1].split("\n")[0],
            f"http://127.0.0.1:{free_port()}",
        )
    )
    code, _ = cli("status")
    assert code == 4
    assert "unreachable" in caplog.text


# -- auto ------------------------------------------------------------------------------------


@pytest.fixture
def canned() -> Iterator[Callable[[dict[str, VersionNumbers]], CannedPrometheus]]:
    stack: list[Any] = []

    def make(numbers: dict[str, VersionNumbers]) -> CannedPrometheus:
        context = CannedPrometheus(numbers).running()
        stack.append(context)
        return context.__enter__()

    yield make
    for context in stack:
        context.__exit__(None, None, None)


AUTO_FAST = ["--soak", "0", "--interval", "0.1", "--step-timeout", "5", "--min-requests", "100"]


def test_auto_with_passing_analyses_steps_up_and_promotes(
    cli: Cli,
    fake_api: FakeApiServer,
    make_isvc: Any,
    registry_model: RegistryModel,
    canned: Callable[[dict[str, VersionNumbers]], CannedPrometheus],
) -> None:
    path = make_isvc("1")
    before = fake_api.get(path)
    prometheus = canned({"1": HEALTHY, "2": HEALTHY})
    code, out = cli(
        "auto", "--alias", "challenger", "--steps", "10,50,100",
        "--prometheus-url", prometheus.url, *AUTO_FAST,
    )  # fmt: skip
    assert code == 0, out
    assert fake_api.calls() == ["GET", "PATCH", "GET", "PATCH", "GET", "PATCH"]
    assert fake_api.calls("leases") == ["POST", "DELETE"]  # the lock, taken and released
    for request in fake_api.patches():
        assert_merge_patch(request, path)
    assert [r.body for r in fake_api.patches()] == [
        {
            "metadata": {"resourceVersion": "1000"},
            "spec": {
                "predictor": {
                    "canaryTrafficPercent": 10,
                    "containers": containers_serving(before, f"models:/{registry_model.name}/2"),
                }
            },
        },
        traffic_body("1002", 50),  # 1001 went to the lease: one revision counter for all
        traffic_body("1003", None),
    ]
    assert registry_model.aliases()["champion"] == "2"
    summary = last_json(out)
    assert (summary["outcome"], summary["version"], summary["stable_version"]) == (
        "promoted",
        "2",
        "1",
    )
    assert [s["percent"] for s in summary["steps"]] == [10, 50]
    # The analysis ran the shared PromQL, for both versions, over the step's window.
    canary = queries.version_selector(registry_model.name, "2")
    stable = queries.version_selector(registry_model.name, "1")
    assert queries.requests_by_outcome(canary, "1s") in prometheus.queries
    assert queries.requests_by_outcome(stable, "1s") in prometheus.queries
    assert queries.latency_quantile(canary, "1s") in prometheus.queries
    assert queries.predictions_by_class(canary, "1s") in prometheus.queries


def test_auto_with_a_failing_analysis_rolls_back_at_once(
    cli: Cli,
    fake_api: FakeApiServer,
    make_isvc: Any,
    registry_model: RegistryModel,
    canned: Callable[[dict[str, VersionNumbers]], CannedPrometheus],
) -> None:
    path = make_isvc("1")
    before = fake_api.get(path)
    prometheus = canned({"1": HEALTHY, "2": ERRORING})
    code, out = cli("auto", "--version", "2", "--prometheus-url", prometheus.url, *AUTO_FAST)
    assert code == 1, out
    assert fake_api.calls() == ["GET", "PATCH", "GET", "PATCH", "PATCH", "GET", "PATCH"]
    bodies = [r.body for r in fake_api.patches()]
    assert bodies[0]["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert bodies[1:] == [
        traffic_body("1002", 0),
        {
            "metadata": {"resourceVersion": "1003"},
            "spec": {
                "predictor": {
                    "containers": containers_serving(before, f"models:/{registry_model.name}/1")
                }
            },
        },
        traffic_body("1004", None),  # the restored revision is Ready: the field goes
    ]
    assert registry_model.aliases()["champion"] == "1"
    tags = registry_model.tags("2")
    assert tags["rollout_status"] == "rejected"
    assert tags["rollout_reason"].startswith("analysis failed at 10 %: success_ratio")
    summary = last_json(out)
    assert summary["outcome"] == "rolled_back"
    assert '"verdict":"fail"' in out  # the step's analysis JSON line was printed too


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_auto_rolls_back(
    fake_api: FakeApiServer,
    registry_model: RegistryModel,
    kubeconfig: Path,
    canned: Callable[[dict[str, VersionNumbers]], CannedPrometheus],
    sig: signal.Signals,
) -> None:
    """Ctrl-C (or a SIGTERM) in the middle of a step: the real process rolls back, exit 1."""
    fake_api.put(
        isvc_path(registry_model.name),
        inference_service(registry_model.name, NAMESPACE, f"models:/{registry_model.name}/1"),
    )
    tmp_path = kubeconfig.parent
    prometheus = canned({"1": HEALTHY, "2": QUIET})  # inconclusive: auto keeps waiting
    log = tmp_path / "auto.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "rollout", "auto",
                "--model-name", registry_model.name, "--tracking-uri", registry_model.tracking_uri,
                "--kubeconfig", str(kubeconfig), "--isvc", registry_model.name,
                "--prometheus-url", prometheus.url,
                "--soak", "0", "--interval", "0.2", "--step-timeout", "120",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env={**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
        )  # fmt: skip
    try:
        wait_until(
            lambda: len(prometheus.queries) >= 6 or process.poll() is not None,
            60,
            "auto to start the canary and analyse",
        )
        assert process.poll() is None, log.read_text()
        process.send_signal(sig)
        code = process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    text = log.read_text()
    assert code == 1, text
    assert [
        r.body["spec"]["predictor"].get("canaryTrafficPercent") for r in fake_api.patches()
    ] == [
        10,
        0,
        None,  # the restore patch carries only the containers
        None,  # the restored revision is Ready: canaryTrafficPercent removed
    ]
    spec = fake_api.get(isvc_path(registry_model.name))["spec"]["predictor"]
    assert "canaryTrafficPercent" not in spec
    assert registry_model.aliases()["champion"] == "1"
    assert registry_model.tags("2")["rollout_reason"] == (
        "interrupted by the operator before the rollout finished"
    )
    assert '"outcome":"rolled_back"' in text


def test_auto_dry_run_prints_every_patch_of_the_schedule_and_sends_none(
    cli: Cli, fake_api: FakeApiServer, make_isvc: Any, registry_model: RegistryModel
) -> None:
    path = make_isvc("1")
    before = fake_api.get(path)
    revision = fake_api.revision
    code, out = cli("auto", "--steps", "10,50,100", "--dry-run")
    assert code == 0, out
    assert fake_api.calls("leases") == ["POST dry-run"]
    assert fake_api.calls() == ["GET", "PATCH dry-run", "PATCH dry-run", "PATCH dry-run"]
    assert fake_api.revision == revision and fake_api.get(path) == before
    printed = [json.loads(line) for line in out.strip().splitlines()]
    patches = [p["body"]["spec"]["predictor"] for p in printed if p.get("method") == "PATCH"]
    assert patches == [
        {
            "canaryTrafficPercent": 10,
            "containers": containers_serving(before, f"models:/{registry_model.name}/2"),
        },
        {"canaryTrafficPercent": 50},
        {"canaryTrafficPercent": None},
    ]
    assert {"registry": "set_champion", "version": "2"}.items() <= printed[3].items()
    assert registry_model.aliases()["champion"] == "1"


@pytest.mark.parametrize("case", ["non-numeric value", "data a string", "overflowing count"])
def test_auto_rolls_back_when_prometheus_answers_garbage(
    cli: Cli,
    fake_api: FakeApiServer,
    make_isvc: Any,
    registry_model: RegistryModel,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    """The canary is started, then the analysis reads garbage: roll back, exit 1, no
    canary left taking traffic."""
    path = make_isvc("1")
    before = fake_api.get(path)
    answer, reason = GARBAGE[case]
    with CannedPrometheus({}, garbage=answer).running() as prometheus:
        code, out = cli("auto", "--version", "2", "--prometheus-url", prometheus.url, *AUTO_FAST)
    assert code == 1, out
    assert [
        r.body["spec"]["predictor"].get("canaryTrafficPercent") for r in fake_api.patches()
    ] == [
        10,
        0,
        None,  # the restore
        None,  # the restored revision is Ready: canaryTrafficPercent removed
    ]
    after = fake_api.get(path)["spec"]["predictor"]
    assert "canaryTrafficPercent" not in after
    assert after["containers"] == before["spec"]["predictor"]["containers"]
    summary = last_json(out)
    assert summary["outcome"] == "rolled_back"
    assert summary["reason"].startswith("aborted: Prometheus at")
    assert reason in summary["reason"]
    assert registry_model.tags("2")["rollout_status"] == "rejected"
    assert "Traceback" not in caplog.text


def test_auto_rolls_back_on_an_error_nobody_foresaw(
    cli: Cli,
    fake_api: FakeApiServer,
    make_isvc: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = make_isvc("1")

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr("rollout.commands.version_stats", broken)
    code, out = cli("auto", "--version", "2", *AUTO_FAST)
    assert code == 1, out
    assert "canaryTrafficPercent" not in fake_api.get(path)["spec"]["predictor"]
    assert last_json(out)["reason"] == (
        "aborted by an unexpected error: ZeroDivisionError: float division by zero"
    )


def test_auto_whose_rollback_breaks_unexpectedly_is_exit_5(
    cli: Cli,
    fake_api: FakeApiServer,
    make_isvc: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_isvc("1")

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyError("spec")

    monkeypatch.setattr("rollout.commands.version_stats", broken)
    monkeypatch.setattr("rollout.commands.check_can_roll_back", broken)
    code, _ = cli("auto", "--version", "2", *AUTO_FAST)
    assert code == 5
    assert "ROLLBACK FAILED" in caplog.text
