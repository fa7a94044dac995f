"""`--target local`: the CLI's verbs, the lock and the controller against the local cluster
(contract/local_cluster.py), with a real `mlflow server`.

The InferenceService's status is written once by the test, Ready as KServe would report
it; the rollout reads nothing else of the status to decide.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests

from contract.local_cluster import INFERENCE_SERVICES, LEASES, LocalCluster
from rollout.__main__ import main
from rollout.commands import Rollout
from rollout.errors import ConfigError, ConflictError, RefusedError
from rollout.local import LocalInferenceServices, LocalLeases
from rollout.lock import LEASE_SECONDS, RolloutLock
from rollout.progress import ANNOTATION
from rollout.settings import build_parser, settings_from_args
from tests.rollout.fake_apiserver import inference_service
from tests.rollout.fake_prometheus import ERRORING, HEALTHY, CannedPrometheus, VersionNumbers
from tests.rollout.helpers import NAMESPACE, RegistryModel, wait_controller_ready
from tests.support import PYTHON, REPO_ROOT, Process, free_port, start_process, wait_until

pytestmark = pytest.mark.integration

DEADLINE = 60.0
FAST = [
    "--steps", "10,50,100", "--soak", "0.3", "--interval", "0.2", "--step-timeout", "5",
    "--min-requests", "100", "--poll", "0.3", "--grace", "1.5",
]  # fmt: skip
ENDS = ("RolloutPromoted", "RolloutRolledBack", "RolloutAbandoned")


@pytest.fixture
def cluster(tmp_path: Path, registry_model: RegistryModel) -> LocalCluster:
    """The local cluster with the model's InferenceService on version 1, Ready."""
    cluster = LocalCluster(tmp_path / "cluster")
    name = registry_model.name
    obj = inference_service(name, NAMESPACE, f"models:/{name}/1")
    status = obj.pop("status")
    for field in ("resourceVersion", "generation"):
        obj["metadata"].pop(field)
    cluster.create(INFERENCE_SERVICES, obj)
    cluster.update_status(INFERENCE_SERVICES, name, status)
    return cluster


def stored(cluster: LocalCluster, name: str) -> dict[str, Any]:
    return cluster.get(INFERENCE_SERVICES, name)


def model_uri(obj: dict[str, Any]) -> str:
    env = {e["name"]: e["value"] for e in obj["spec"]["predictor"]["containers"][0]["env"]}
    return str(env["MODEL_URI"])


@pytest.fixture
def rollout(
    cluster: LocalCluster, registry_model: RegistryModel, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str]]:
    """`python -m rollout VERB --target local ...` in-process: (exit code, stdout)."""

    def run(verb: str, *extra: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(
            [
                verb, "--target", "local", "--local-dir", str(cluster.folder),
                "--model-name", registry_model.name, "--tracking-uri", registry_model.tracking_uri,
                *extra,
            ]
        )  # fmt: skip
        return code, capsys.readouterr().out

    return run


def test_start_sends_the_guarded_merge_patch_to_the_local_cluster(
    cluster: LocalCluster, registry_model: RegistryModel, rollout: Callable[..., tuple[int, str]]
) -> None:
    name = registry_model.name
    before = stored(cluster, name)

    code, out = rollout("start", "--dry-run")
    assert code == 0, out
    planned = json.loads(out.splitlines()[0])
    assert planned["path"] == str(cluster.folder / "inferenceservices" / f"{name}.json")
    assert planned["body"]["metadata"] == {"resourceVersion": before["metadata"]["resourceVersion"]}
    assert stored(cluster, name) == before  # a dry run stores nothing

    code, out = rollout("start", "--percent", "20")
    assert code == 0, out
    after = stored(cluster, name)
    assert after["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert model_uri(after) == f"models:/{name}/2"  # @challenger, resolved
    assert after["spec"]["predictor"]["containers"][0]["image"].endswith(":0.1.0")  # kept
    assert int(after["metadata"]["resourceVersion"]) == cluster.revision()
    assert (
        int(after["metadata"]["resourceVersion"]) == int(before["metadata"]["resourceVersion"]) + 1
    )
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert after["status"] == before["status"]
    summary = json.loads(out.splitlines()[-1])
    assert summary == {
        "action": "start", "version": "2", "stable_version": "1", "percent": 20,
        "model_uri": f"models:/{name}/2", "dry_run": False,
    }  # fmt: skip

    code, out = rollout("status")
    assert code == 0
    status = json.loads(out.splitlines()[-1])
    assert (status["canary_version"], status["canary_percent"], status["auto_lock"]) == (
        "2",
        20,
        None,
    )


def test_the_same_refusals_locally(
    cluster: LocalCluster,
    registry_model: RegistryModel,
    rollout: Callable[..., tuple[int, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = registry_model.name
    code, _ = rollout("promote")
    assert code == 2 and "no canary is running" in caplog.text
    assert rollout("start")[0] == 0
    at_start = stored(cluster, name)
    code, _ = rollout("start", "--version", "3")
    assert code == 2 and "a canary of version 2 is already running at 10 %" in caplog.text
    assert stored(cluster, name) == at_start  # refused: nothing patched

    # Not Ready: refused with the condition's reason, as on Kubernetes.
    status = copy.deepcopy(at_start["status"])
    status["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": "exit 1"}
    ]
    cluster.update_status(INFERENCE_SERVICES, name, status)
    code, _ = rollout("promote")
    assert code == 2 and "is not Ready (RevisionFailed: exit 1)" in caplog.text
    assert "kubectl" not in caplog.text  # the hints name the local tools
    cluster.update_status(INFERENCE_SERVICES, name, {})
    code, _ = rollout("promote")
    assert code == 2 and "local serving has not reported on it" in caplog.text
    assert registry_model.aliases()["champion"] == "1"


def test_promote_moves_champion_and_rollback_tags_the_version(
    cluster: LocalCluster, registry_model: RegistryModel, rollout: Callable[..., tuple[int, str]]
) -> None:
    name = registry_model.name
    assert rollout("start")[0] == 0
    code, out = rollout("promote")
    assert code == 0, out
    promoted = stored(cluster, name)
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert registry_model.aliases()["champion"] == "2"
    assert registry_model.tags("2")["rollout_status"] == "promoted"

    registry_model.client.set_registered_model_alias(name, "challenger", "3")
    assert rollout("start")[0] == 0
    # No local serving runs here: nobody reports the restored revision Ready, so the 0 stays
    # (removing it would send 100 % to the latest READY revision: the rejected canary).
    code, out = rollout("rollback", "--reason", "looked wrong", "--ready-timeout", "0")
    assert code == 0, out
    assert "Run `rollback` again to finish" in out and '"spec_clean":false' in out
    rolled_back = stored(cluster, name)
    assert rolled_back["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert model_uri(rolled_back) == f"models:/{name}/2"  # the stable version, back
    assert registry_model.aliases()["champion"] == "2"
    tags = registry_model.tags("3")
    assert (tags["rollout_status"], tags["rollout_reason"]) == ("rejected", "looked wrong")
    # Traffic first, then the spec: two changes, each its own resourceVersion.
    assert int(rolled_back["metadata"]["resourceVersion"]) == cluster.revision()


def test_a_missing_local_cluster_or_isvc_is_refused_with_its_path(
    tmp_path: Path, cluster: LocalCluster, registry_model: RegistryModel,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    nowhere = tmp_path / "nowhere"
    common = ["--model-name", registry_model.name, "--tracking-uri", registry_model.tracking_uri]
    assert main(["status", "--target", "local", "--local-dir", str(nowhere), *common]) == 2
    assert f"no local cluster at {nowhere}" in caplog.text and "run make demo first" in caplog.text
    assert not nowhere.exists()
    caplog.clear()
    code = main(
        ["status", "--target", "local", "--local-dir", str(cluster.folder), "--isvc", "other",
         *common]
    )  # fmt: skip
    assert code == 2
    assert str(cluster.folder / "inferenceservices" / "other.json") in caplog.text
    assert "run make demo first" in caplog.text


def test_the_target_comes_from_the_environment_and_a_mistyped_one_is_refused() -> None:
    env = {"ROLLOUT_TARGET": "local", "ROLLOUT_LOCAL_DIR": "/tmp/elsewhere"}
    settings = settings_from_args(build_parser(env).parse_args(["status"]))
    assert (settings.target, settings.local_dir) == ("local", "/tmp/elsewhere")
    assert settings_from_args(build_parser({}).parse_args(["auto"])).target == "kubernetes"
    assert settings_from_args(build_parser({}).parse_args(["status"])).local_dir == ".demo/cluster"
    mistyped = build_parser({"ROLLOUT_TARGET": "lcoal"}).parse_args(["status"])
    with pytest.raises(ConfigError, match=r"ROLLOUT_TARGET\) must be one of kubernetes, local"):
        settings_from_args(mistyped)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_lock_on_the_local_clusters_leases(cluster: LocalCluster) -> None:
    clock = Clock(1_000_000.0)
    leases = LocalLeases(cluster, NAMESPACE)
    first = RolloutLock(leases, "model", identity="a:1:x", clock=clock)
    second = RolloutLock(leases, "model", identity="b:2:y", clock=clock)
    first.acquire("2")
    with pytest.raises(RefusedError, match="another `auto` of version 2 holds Lease mlops/model"):
        second.acquire("3")
    held = cluster.get(LEASES, "model-rollout")
    assert held["spec"]["holderIdentity"] == "a:1:x"
    # Past its duration without renewal, it is taken over with the stored resourceVersion.
    clock.now += LEASE_SECONDS + 1
    second.acquire("3")
    taken = cluster.get(LEASES, "model-rollout")
    assert taken["spec"]["holderIdentity"] == "b:2:y"
    assert int(taken["metadata"]["resourceVersion"]) > int(held["metadata"]["resourceVersion"])
    first.release()  # no longer ours: the precondition leaves it alone
    assert cluster.get(LEASES, "model-rollout")["spec"]["holderIdentity"] == "b:2:y"
    second.release()
    assert cluster.list_objects(LEASES) == []


# --- the controller, as a process ---------------------------------------------------------


@pytest.fixture
def canned() -> Iterator[Callable[[dict[str, VersionNumbers]], CannedPrometheus]]:
    with ExitStack() as stack:

        def make(numbers: dict[str, VersionNumbers]) -> CannedPrometheus:
            return stack.enter_context(CannedPrometheus(numbers).running())

        yield make


class LocalController:
    def __init__(self, process: Process, metrics_port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{metrics_port}"


@pytest.fixture
def start_controller(
    tmp_path: Path, cluster: LocalCluster, registry_model: RegistryModel
) -> Iterator[Callable[..., LocalController]]:
    started: list[Process] = []

    def start(prometheus_url: str, *extra: str) -> LocalController:
        port = free_port()
        process = start_process(
            [
                PYTHON, "-m", "rollout", "controller", "--target", "local",
                "--local-dir", str(cluster.folder), "--isvc", registry_model.name,
                "--model-name", registry_model.name, "--tracking-uri", registry_model.tracking_uri,
                "--prometheus-url", prometheus_url, "--listen", "127.0.0.1",
                "--metrics-port", str(port), *FAST, *extra,
            ],
            tmp_path / f"controller-{len(started)}.log",
        )  # fmt: skip
        started.append(process)
        controller = LocalController(process, port)

        wait_controller_ready(process, controller.url, DEADLINE, "the local controller's /readyz")
        return controller

    yield start
    for process in started:
        process.stop()


def reasons(cluster: LocalCluster) -> list[str]:
    return [str(e["reason"]) for e in cluster.events()]


def wait_for_end(cluster: LocalCluster, controller: LocalController, reason: str) -> dict[str, Any]:
    def ended() -> bool:
        assert controller.process.alive(), controller.process.log()
        return any(r in ENDS for r in reasons(cluster))

    wait_until(ended, DEADLINE, f"the rollout to end ({reason})", interval=0.1)
    event = next(e for e in cluster.events() if e["reason"] in ENDS)
    assert event["reason"] == reason, (event, controller.process.log())
    wait_until(lambda: cluster.list_objects(LEASES) == [], 10, "the lease's release")
    return event


def test_controller_promotes_a_healthy_challenger_on_the_local_cluster(
    cluster: LocalCluster,
    registry_model: RegistryModel,
    canned: Callable[[dict[str, VersionNumbers]], CannedPrometheus],
    start_controller: Callable[..., LocalController],
) -> None:
    name = registry_model.name
    controller = start_controller(canned({"1": HEALTHY, "2": HEALTHY}).url)
    final = wait_for_end(cluster, controller, "RolloutPromoted")

    assert "version 2 takes 100 %" in final["message"]
    assert reasons(cluster) == ["RolloutStarted", "RolloutStepped", "RolloutPromoted"]
    assert final["involvedObject"]["kind"] == "InferenceService"
    assert final["involvedObject"]["name"] == name and final["type"] == "Normal"
    obj = stored(cluster, name)
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    assert model_uri(obj) == f"models:/{name}/2"
    # start, 50 %, promote: three spec changes after the test's create.
    assert obj["metadata"]["generation"] == 4
    assert ANNOTATION not in (obj["metadata"].get("annotations") or {})
    assert registry_model.aliases()["champion"] == "2"
    assert registry_model.tags("2")["rollout_status"] == "promoted"
    log = controller.process.log()
    # Each analysis's verdict table, as `auto` prints it, and the decisions as log lines.
    assert log.count("canary analysis of") == 2, log
    assert "RolloutPromoted" in log
    metrics = requests.get(f"{controller.url}/metrics", timeout=5).text
    assert f'rollout_analysis_total{{model_name="{name}",verdict="pass"}} 2.0' in metrics
    assert requests.get(f"{controller.url}/healthz", timeout=5).ok
    # SIGTERM: a clean stop.
    os.killpg(controller.process.popen.pid, signal.SIGTERM)
    assert controller.process.popen.wait(30) == 0
    assert "rollout controller stopped" in controller.process.log()


def test_controller_rolls_back_a_failing_challenger_on_the_local_cluster(
    cluster: LocalCluster,
    registry_model: RegistryModel,
    canned: Callable[[dict[str, VersionNumbers]], CannedPrometheus],
    start_controller: Callable[..., LocalController],
) -> None:
    name = registry_model.name
    # No local serving: the restored revision is never reported Ready, so the rollback ends
    # at --ready-timeout with the 0 kept and a Warning saying so.
    url = canned({"1": HEALTHY, "2": ERRORING}).url
    controller = start_controller(url, "--ready-timeout", "0.5")
    final = wait_for_end(cluster, controller, "RolloutRolledBack")

    assert "success_ratio" in final["message"] and final["type"] == "Warning"
    kept = next(e for e in cluster.events() if e["reason"] == "RolloutSpecKeepsZero")
    assert kept["type"] == "Warning" and "not created the restored revision" in kept["message"]
    obj = stored(cluster, name)
    assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert model_uri(obj) == f"models:/{name}/1"
    assert registry_model.aliases()["champion"] == "1"
    tags = registry_model.tags("2")
    assert tags["rollout_status"] == "rejected" and "success_ratio" in tags["rollout_reason"]
    assert "canary analysis of" in controller.process.log()


def test_local_controller_killed_mid_soak_resumes_on_restart(
    cluster: LocalCluster,
    registry_model: RegistryModel,
    canned: Callable[[dict[str, VersionNumbers]], CannedPrometheus],
    start_controller: Callable[..., LocalController],
) -> None:
    name = registry_model.name
    prometheus = canned({"1": HEALTHY, "2": HEALTHY})
    slow = ["--soak", "2"]
    first = start_controller(prometheus.url, *slow)
    wait_until(lambda: "RolloutStarted" in reasons(cluster), DEADLINE, "the start")
    os.killpg(first.process.popen.pid, signal.SIGKILL)
    first.process.popen.wait(10)
    record = json.loads(
        cluster.get(LEASES, f"{name}-rollout")["metadata"]["annotations"][ANNOTATION]
    )
    assert (record["version"], record["percent"]) == ("2", 10)
    started_at = stored(cluster, name)["metadata"]["generation"]

    second = start_controller(prometheus.url, *slow)
    wait_for_end(cluster, second, "RolloutPromoted")
    assert reasons(cluster) == ["RolloutStarted", "RolloutStepped", "RolloutPromoted"]
    assert "resuming the rollout of version 2 (progressing at 10 %)" in second.process.log()
    # No second start: only the 50 % step and the promotion changed the spec.
    assert stored(cluster, name)["metadata"]["generation"] == started_at + 2
    assert registry_model.aliases()["champion"] == "2"


class WriterInBetween(LocalInferenceServices):
    """The local serving process writing the object between the rollout's read and its
    patch, once: `edit()` runs just before the first patch is applied."""

    def __init__(self, cluster: LocalCluster, name: str, edit: Callable[[], None]) -> None:
        super().__init__(cluster, name)
        self.edit, self.patches = edit, 0

    def patch(self, body: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        self.patches += 1
        if self.patches == 1:
            self.edit()
        return super().patch(body, dry_run=dry_run)


def local_rollout(
    cluster: LocalCluster, registry_model: RegistryModel, edit: Callable[[], None]
) -> tuple[Rollout, WriterInBetween]:
    args = build_parser({}).parse_args(
        ["start", "--target", "local", "--local-dir", str(cluster.folder),
         "--model-name", registry_model.name, "--tracking-uri", registry_model.tracking_uri]
    )  # fmt: skip
    writer = WriterInBetween(cluster, registry_model.name, edit)
    return Rollout(
        settings_from_args(args), kube_factory=lambda _: writer, sleep=lambda _: None
    ), writer


def test_a_status_write_between_read_and_patch_is_retried_a_spec_change_stops_us(
    cluster: LocalCluster, registry_model: RegistryModel
) -> None:
    name = registry_model.name
    status = stored(cluster, name)["status"]

    def status_write() -> None:
        cluster.update_status(INFERENCE_SERVICES, name, {**status, "url": "http://moved"})

    rollout, writer = local_rollout(cluster, registry_model, status_write)
    assert rollout.start() == 0
    assert writer.patches == 2  # 409 on the stale resourceVersion, then rebuilt and sent
    after = stored(cluster, name)
    assert after["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert after["status"]["url"] == "http://moved"  # the other writer's change survives

    def spec_write() -> None:
        cluster.merge_patch(INFERENCE_SERVICES, name, {"spec": {"predictor": {"minReplicas": 2}}})

    rollout, writer = local_rollout(cluster, registry_model, spec_write)
    with pytest.raises(ConflictError, match="someone changed the spec"):
        rollout.do_rollback("stop")
    assert stored(cluster, name)["spec"]["predictor"]["canaryTrafficPercent"] == 10


def test_auto_on_the_local_cluster_takes_and_releases_the_lock(
    cluster: LocalCluster,
    registry_model: RegistryModel,
    rollout: Callable[..., tuple[int, str]],
    canned: Callable[[dict[str, VersionNumbers]], CannedPrometheus],
    caplog: pytest.LogCaptureFixture,
) -> None:
    prometheus = canned({"1": HEALTHY, "2": HEALTHY})
    judged = ["--prometheus-url", prometheus.url, "--steps", "50,100", "--soak", "0",
              "--interval", "0.1", "--step-timeout", "3", "--min-requests", "100"]  # fmt: skip
    # While another holder (the controller) has the lease, `auto` is refused up front.
    holder = RolloutLock(LocalLeases(cluster, NAMESPACE), registry_model.name, identity="other")
    holder.acquire("2")
    code, _ = rollout("auto", *judged)
    assert code == 2 and "holds Lease mlops/" in caplog.text
    assert "canaryTrafficPercent" not in stored(cluster, registry_model.name)["spec"]["predictor"]
    holder.release()

    code, out = rollout("auto", *judged)
    assert code == 0, out
    assert "verdict: PASS" in out and json.loads(out.splitlines()[-1])["outcome"] == "promoted"
    assert registry_model.aliases()["champion"] == "2"
    assert cluster.list_objects(LEASES) == []  # released


def test_the_make_targets_act_on_the_local_cluster_with_target_local(
    tmp_path: Path, cluster: LocalCluster, registry_model: RegistryModel
) -> None:
    venv = Path(sys.executable).parent.parent

    def make(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "--no-print-directory", "-o", f"{venv}/.installed", f"VENV={venv}",
             *args, "TARGET=local", f"ROLLOUT_LOCAL_DIR={cluster.folder}",
             f"MODEL_NAME={registry_model.name}", f"MLFLOW_URL={registry_model.tracking_uri}",
             f"ROLLOUT_EXIT_FILE={tmp_path / 'exit-code'}"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip

    done = make("canary", "CANARY_PERCENT=30")
    assert done.returncode == 0, done.stderr
    assert stored(cluster, registry_model.name)["spec"]["predictor"]["canaryTrafficPercent"] == 30
    done = make("rollout-status")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["canary_version"] == "2"
    done = make("rollback", "ROLLBACK_REASON=by make", "ROLLOUT_ARGS=--ready-timeout 0")
    assert done.returncode == 0, done.stderr
    assert registry_model.tags("2")["rollout_reason"] == "by make"
    assert (tmp_path / "exit-code").read_text().strip() == "0"


def test_an_unreadable_record_on_the_local_lease_is_refused_with_its_file(
    cluster: LocalCluster, registry_model: RegistryModel
) -> None:
    from rollout.controller_metrics import ControllerMetrics
    from rollout.reconcile import CONTROLLER_IDENTITY, ControllerConfig, Reconciler

    name = registry_model.name
    cluster.create(
        LEASES,
        {
            "metadata": {"name": f"{name}-rollout", "annotations": {ANNOTATION: "{not json"}},
            "spec": {"holderIdentity": CONTROLLER_IDENTITY, "leaseDurationSeconds": 180},
        },
    )
    args = build_parser({}).parse_args(
        ["controller", "--target", "local", "--local-dir", str(cluster.folder),
         "--model-name", name, "--tracking-uri", registry_model.tracking_uri]
    )  # fmt: skip
    settings = settings_from_args(args)
    reconciler = Reconciler(
        Rollout(settings), ControllerConfig(settings.schedule), ControllerMetrics()
    )
    before = stored(cluster, name)
    lease_file = f"{cluster.folder}/leases/{name}-rollout.json"
    with pytest.raises(
        RefusedError, match=f"is not a rollout record.*locally: remove {lease_file}"
    ):
        reconciler.tick()
    assert stored(cluster, name) == before  # touched nothing


def test_the_local_controller_refuses_a_busy_metrics_port_and_a_missing_cluster(
    tmp_path: Path, cluster: LocalCluster, registry_model: RegistryModel
) -> None:
    import socket

    def controller(local_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "rollout", "controller", "--target", "local",
             "--local-dir", str(local_dir), "--model-name", registry_model.name,
             "--tracking-uri", registry_model.tracking_uri, "--listen", "127.0.0.1",
             "--metrics-port", str(port)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = controller(cluster.folder, busy.getsockname()[1])
    assert done.returncode == 2, done.stderr
    assert "pass --metrics-port a free port" in done.stderr
    done = controller(tmp_path / "nowhere", free_port())
    assert done.returncode == 2 and "run make demo first" in done.stderr
