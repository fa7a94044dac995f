"""`python -m rollout controller` as a real process (kopf and all) against the recording
API server, a real `mlflow server`, and a canned Prometheus; the PromQL on a real
Prometheus scraping real predictors is in test_controller_prometheus.py.

Soaks are a fraction of a second, every wait has a deadline.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import requests

from rollout.errors import RefusedError
from rollout.progress import ANNOTATION
from tests.rollout.fake_apiserver import FakeApiServer
from tests.rollout.fake_prometheus import (
    ERRORING,
    HEALTHY,
    CannedPrometheus,
    VersionNumbers,
)
from tests.rollout.helpers import NAMESPACE, RegistryModel, wait_controller_ready
from tests.support import PYTHON, Process, free_port, start_process, wait_until

pytestmark = pytest.mark.integration

FAST = [
    "--steps", "10,50,100", "--soak", "0.3", "--interval", "0.2", "--step-timeout", "5",
    "--min-requests", "100", "--poll", "0.3", "--grace", "1.5",
]  # fmt: skip
DEADLINE = 60.0


@pytest.fixture
def canned() -> Iterator[Callable[[dict[str, VersionNumbers]], CannedPrometheus]]:
    with ExitStack() as stack:

        def make(numbers: dict[str, VersionNumbers]) -> CannedPrometheus:
            return stack.enter_context(CannedPrometheus(numbers).running())

        yield make


class Controller:
    """One `python -m rollout controller` process and its ports."""

    def __init__(self, process: Process, metrics_port: int, health_port: int) -> None:
        self.process = process
        self.metrics_url = f"http://127.0.0.1:{metrics_port}"
        self.health_url = f"http://127.0.0.1:{health_port}/healthz"

    def metrics(self) -> str:
        return requests.get(f"{self.metrics_url}/metrics", timeout=5).text

    def sample(self, name: str, **labels: str) -> float | None:
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.metrics()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return None


@pytest.fixture
def start_controller(
    tmp_path: Path, kubeconfig: Path, registry_model: RegistryModel
) -> Iterator[Callable[..., Controller]]:
    started: list[Process] = []

    def start(prometheus_url: str, *extra: str) -> Controller:
        metrics_port, health_port = free_port(), free_port()
        process = start_process(
            [
                PYTHON, "-m", "rollout", "controller", "--kubeconfig", str(kubeconfig),
                "--namespace", NAMESPACE, "--tracking-uri", registry_model.tracking_uri,
                "--prometheus-url", prometheus_url, "--listen", "127.0.0.1",
                "--metrics-port", str(metrics_port), "--health-port", str(health_port),
                *FAST, *extra,
            ],
            tmp_path / f"controller-{len(started)}.log",
        )  # fmt: skip
        started.append(process)
        controller = Controller(process, metrics_port, health_port)

        wait_controller_ready(process, controller.metrics_url, DEADLINE, "the controller's /readyz")
        return controller

    yield start
    for process in started:
        process.stop()


ENDS = ("RolloutPromoted", "RolloutRolledBack", "RolloutAbandoned")


def lease_path(isvc_name: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{isvc_name}-rollout"


def record(fake_api: FakeApiServer, isvc_name: str) -> dict[str, Any]:
    """The controller's record on the rollout's lease; {} when there is no lease."""
    with fake_api.lock:
        lease = fake_api.objects.get(lease_path(isvc_name))
    if lease is None:
        return {}
    return dict(json.loads(lease["metadata"]["annotations"][ANNOTATION]))


def wait_for_end(
    fake_api: FakeApiServer, isvc_name: str, controller: Controller, reason: str
) -> dict[str, Any]:
    """The Event that ended the rollout, checked to be `reason`; the lease is gone."""

    def ended() -> bool:
        assert controller.process.alive(), controller.process.log()
        return any(r in ENDS for r in fake_api.event_reasons())

    wait_until(ended, DEADLINE, f"the rollout to end ({reason})", interval=0.1)
    event = next(e for e in fake_api.events if e["reason"] in ENDS)
    assert event["reason"] == reason, (event, controller.process.log())
    wait_until(lambda: record(fake_api, isvc_name) == {}, 10, "the lease's release")
    return event


def predictor_spec(fake_api: FakeApiServer, path: str) -> dict[str, Any]:
    return dict(fake_api.get(path)["spec"]["predictor"])


def model_uri(spec: dict[str, Any]) -> str:
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    return str(env["MODEL_URI"])


def test_healthy_challenger_is_stepped_to_100_and_promoted(
    fake_api: FakeApiServer,
    make_isvc: Any,
    registry_model: RegistryModel,
    canned: Callable[[dict[str, VersionNumbers]], CannedPrometheus],
    start_controller: Callable[..., Controller],
) -> None:
    path = make_isvc("1")
    prometheus = canned({"1": HEALTHY, "2": HEALTHY})
    controller = start_controller(prometheus.url)
    final = wait_for_end(fake_api, registry_model.name, controller, "RolloutPromoted")

    assert "version 2 takes 100 %" in final["message"]
    spec = predictor_spec(fake_api, path)
    assert "canaryTrafficPercent" not in spec  # 100 % to the latest revision
    assert model_uri(spec) == f"models:/{registry_model.name}/2"
    assert registry_model.aliases()["champion"] == "2"
    tags = registry_model.tags("2")
    assert tags["rollout_status"] == "promoted"
    assert tags["rollout_decision"].split(" ", 1)[1].startswith("RolloutPromoted: ")
    # The spec went 10 % -> 50 % -> promoted, each a merge patch guarded by the
    # resourceVersion; nothing (kopf neither) wrote metadata on the object: KServe would
    # copy an annotation into the revision template.
    patches = [r for r in fake_api.patches() if r.path == path]
    percents = [
        r.body.get("spec", {}).get("predictor", {}).get("canaryTrafficPercent", "-")
        for r in patches
        if "spec" in r.body
    ]
    assert percents == [10, 50, None]
    assert all(r.body["metadata"]["resourceVersion"] for r in patches)
    assert all(set(r.body["metadata"]) == {"resourceVersion"} for r in patches)
    assert ANNOTATION not in (fake_api.get(path)["metadata"].get("annotations") or {})
    # The record lived on the lease, held by the controller, deleted at the end.
    # Taken (create) with the start's record, written with the step's and the promotion's
    # (renewals), released (delete).
    lease_writes = [c for c in fake_api.calls("leases") if c != "GET"]
    assert lease_writes == ["POST", "PUT", "PUT", "DELETE"], lease_writes
    assert all(r.query.get("fieldManager") == ["mlops-rollout"] for r in patches)
    # Every decision is an Event on the InferenceService.
    reasons = fake_api.event_reasons()
    assert reasons == ["RolloutStarted", "RolloutStepped", "RolloutPromoted"], reasons
    event = fake_api.events[-1]
    assert event["involvedObject"]["kind"] == "InferenceService"
    assert event["involvedObject"]["name"] == registry_model.name
    assert event["type"] == "Normal" and "version 2" in event["message"]
    # Its own metrics, per model.
    model = registry_model.name
    assert controller.sample("rollout_phase", model_name=model, phase="idle") == 1
    assert controller.sample("rollout_phase", model_name=model, phase="progressing") == 0
    assert controller.sample("rollout_canary_percent", model_name=model) == 0
    assert controller.sample("rollout_analysis_total", model_name=model, verdict="pass") == 2
    assert requests.get(controller.health_url, timeout=5).ok
    # The decisions are log lines too.
    log = controller.process.log()
    assert "RolloutStarted" in log and "RolloutPromoted" in log


def test_failing_challenger_is_rolled_back_at_the_first_step(
    fake_api: FakeApiServer,
    make_isvc: Any,
    registry_model: RegistryModel,
    canned: Callable[[dict[str, VersionNumbers]], CannedPrometheus],
    start_controller: Callable[..., Controller],
) -> None:
    path = make_isvc("1")
    prometheus = canned({"1": HEALTHY, "2": ERRORING})
    controller = start_controller(prometheus.url)
    final = wait_for_end(fake_api, registry_model.name, controller, "RolloutRolledBack")

    assert "success_ratio" in final["message"] and "at 10 %" in final["message"]
    spec = predictor_spec(fake_api, path)
    assert "canaryTrafficPercent" not in spec  # the restored revision was Ready: cleared
    assert model_uri(spec) == f"models:/{registry_model.name}/1"
    assert registry_model.aliases()["champion"] == "1"
    tags = registry_model.tags("2")
    assert tags["rollout_status"] == "rejected" and "success_ratio" in tags["rollout_reason"]
    # Traffic to 0 first, then the stable spec.
    spec_patches = [r.body["spec"]["predictor"] for r in fake_api.patches() if "spec" in r.body]
    assert spec_patches[0]["canaryTrafficPercent"] == 10
    assert spec_patches[1] == {"canaryTrafficPercent": 0}
    assert model_uri(spec_patches[2]) == f"models:/{registry_model.name}/1"
    assert spec_patches[3] == {"canaryTrafficPercent": None}  # then the field goes
    assert len(spec_patches) == 4
    assert fake_api.event_reasons() == ["RolloutStarted", "RolloutRolledBack"]
    assert fake_api.events[-1]["type"] == "Warning"
    model = registry_model.name
    assert controller.sample("rollout_analysis_total", model_name=model, verdict="fail") == 1
    # A rejected version is no trigger: polling on does not start it again.
    polled = len(fake_api.requests)
    wait_until(lambda: len(fake_api.requests) > polled + 4, DEADLINE, "more polls")
    assert fake_api.event_reasons() == ["RolloutStarted", "RolloutRolledBack"]


def test_prometheus_down_during_a_soak_rolls_back_after_the_grace(
    fake_api: FakeApiServer,
    make_isvc: Any,
    registry_model: RegistryModel,
    start_controller: Callable[..., Controller],
) -> None:
    path = make_isvc("1")
    nothing_listens = f"http://127.0.0.1:{free_port()}"
    controller = start_controller(nothing_listens)
    final = wait_for_end(fake_api, registry_model.name, controller, "RolloutRolledBack")

    assert "could not be judged" in final["message"] and "grace 1.5s" in final["message"]
    assert "Prometheus" in final["message"]
    assert registry_model.tags("2")["rollout_status"] == "rejected"
    assert "could not be judged" in registry_model.tags("2")["rollout_reason"]
    assert "canaryTrafficPercent" not in predictor_spec(fake_api, path)
    assert "could not be judged" in fake_api.events[-1]["message"]
    model = registry_model.name
    unavailable = controller.sample(
        "rollout_analysis_total", model_name=model, verdict="unavailable"
    )
    assert unavailable is not None and unavailable >= 2


def test_refusals_are_said_once_and_patch_nothing(
    fake_api: FakeApiServer,
    make_isvc: Any,
    registry_model: RegistryModel,
    canned: Callable[[dict[str, VersionNumbers]], CannedPrometheus],
    start_controller: Callable[..., Controller],
) -> None:
    path = make_isvc("1")
    fake_api.edit(path, {"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    registry_model.client.set_model_version_tag(registry_model.name, "3", "gate_status", "rejected")
    prometheus = canned({"1": HEALTHY, "2": HEALTHY})
    controller = start_controller(prometheus.url)
    wait_until(lambda: len(fake_api.events) >= 1, DEADLINE, "the refusal's Event")
    polled = len(fake_api.requests)
    wait_until(lambda: len(fake_api.requests) > polled + 4, DEADLINE, "more polls")
    assert fake_api.event_reasons() == ["RolloutRefused"]
    assert "is not Ready" in fake_api.events[0]["message"]
    assert fake_api.patches() == []
    assert "RolloutRefused: version 2" in registry_model.tags("2")["rollout_decision"]
    assert "is not Ready" in controller.process.log()

    # A version the training gates rejected, as the new @challenger: refused with the reason.
    fake_api.edit(path, {"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    registry_model.client.set_registered_model_alias(registry_model.name, "challenger", "3")
    wait_until(lambda: len(fake_api.events) >= 2, DEADLINE, "the second refusal")
    assert "failed the training gates" in fake_api.events[1]["message"]
    assert fake_api.patches() == []


def test_killed_mid_step_and_restarted_resumes(
    fake_api: FakeApiServer,
    make_isvc: Any,
    registry_model: RegistryModel,
    canned: Callable[[dict[str, VersionNumbers]], CannedPrometheus],
    start_controller: Callable[..., Controller],
) -> None:
    path = make_isvc("1")
    prometheus = canned({"1": HEALTHY, "2": HEALTHY})
    slow = ["--soak", "2"]  # long enough to be killed in the middle of the first soak
    first = start_controller(prometheus.url, *slow)
    name = registry_model.name
    wait_until(lambda: "RolloutStarted" in fake_api.event_reasons(), DEADLINE, "the start")
    os.killpg(first.process.popen.pid, signal.SIGKILL)
    first.process.popen.wait(10)
    at_kill = record(fake_api, name)
    assert at_kill["percent"] == 10 and at_kill["version"] == "2"
    assert predictor_spec(fake_api, path)["canaryTrafficPercent"] == 10

    second = start_controller(prometheus.url, *slow)
    wait_for_end(fake_api, name, second, "RolloutPromoted")
    assert registry_model.aliases()["champion"] == "2"
    # The second controller did not start the rollout again: one start, both steps.
    starts = [
        r for r in fake_api.patches() if "containers" in r.body.get("spec", {}).get("predictor", {})
    ]
    assert len(starts) == 1
    assert fake_api.event_reasons() == ["RolloutStarted", "RolloutStepped", "RolloutPromoted"]
    assert "RolloutStarted" not in second.process.log()
    assert "resuming the rollout of version 2 (progressing at 10 %)" in second.process.log()


def test_a_helm_upgrade_during_the_rollback_is_not_lost(
    fake_api: FakeApiServer,
    make_isvc: Any,
    registry_model: RegistryModel,
    canned: Callable[[dict[str, VersionNumbers]], CannedPrometheus],
    start_controller: Callable[..., Controller],
) -> None:
    """`helm upgrade` with a new image (MODEL_URI copied from the live object, as the chart
    does with the controller on) lands between the rollback's two patches: the
    controller's stale copy is refused (409), it rebuilds from Helm's object, and both
    changes survive."""
    path = make_isvc("1")
    canary_uri = f"models:/{registry_model.name}/2"
    upgraded = copy.deepcopy(predictor_spec(fake_api, path)["containers"])
    upgraded[0]["image"] = "kind.local/mlops-serving:0.2.0"
    next(e for e in upgraded[0]["env"] if e["name"] == "MODEL_URI")["value"] = canary_uri
    helm_upgrade = {"spec": {"predictor": {"containers": upgraded, "maxReplicas": 3}}}
    # Before the start's patch, before the traffic-to-0 patch: nothing; before the
    # restore of the stable MODEL_URI: the upgrade.
    fake_api.edits_before_next_patch = [{}, {}, helm_upgrade]
    prometheus = canned({"1": HEALTHY, "2": ERRORING})
    controller = start_controller(prometheus.url)
    wait_for_end(fake_api, registry_model.name, controller, "RolloutRolledBack")

    spec = predictor_spec(fake_api, path)
    assert spec["containers"][0]["image"] == "kind.local/mlops-serving:0.2.0"  # Helm's
    assert spec["maxReplicas"] == 3  # Helm's
    assert model_uri(spec) == f"models:/{registry_model.name}/1"  # the controller's
    assert "canaryTrafficPercent" not in spec
    restores = [r for r in fake_api.patches() if "containers" in r.body["spec"]["predictor"]]
    assert len(restores) == 3  # the start, the refused restore, the rebuilt restore
    assert (
        restores[1].body["metadata"]["resourceVersion"]
        != restores[2].body["metadata"]["resourceVersion"]
    )
    assert restores[2].body["spec"]["predictor"]["containers"][0]["image"].endswith(":0.2.0")
    assert "changed" in controller.process.log()


def lease_with_record(name: str, progress: dict[str, Any]) -> dict[str, Any]:
    """The lease as a controller killed right after writing `progress` left it."""
    from rollout.lock import micro_time

    now = micro_time(time.time())
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": f"{name}-rollout",
            "namespace": NAMESPACE,
            "annotations": {ANNOTATION: json.dumps(progress), "mlops-rollout/version": "2"},
        },
        "spec": {
            "holderIdentity": "mlops-rollout-controller",
            "leaseDurationSeconds": 180,
            "acquireTime": now,
            "renewTime": now,
        },
    }


def test_a_step_the_record_announced_but_never_sent_is_sent_on_restart(
    fake_api: FakeApiServer,
    make_isvc: Any,
    kubeconfig: Path,
    registry_model: RegistryModel,
    canned: Callable[[dict[str, VersionNumbers]], CannedPrometheus],
) -> None:
    """Killed between writing the record (step 2: 50 %) and the traffic patch: the spec
    still says 10 %. The next controller's first tick sends the 50 % the record says,
    and judges the step from the time the record gives."""
    from rollout.commands import Rollout
    from rollout.controller_metrics import ControllerMetrics
    from rollout.reconcile import ControllerConfig, Reconciler
    from rollout.settings import build_parser, settings_from_args

    path = make_isvc("2", canary_percent=10)
    name = registry_model.name
    began = time.time()
    record = {
        "phase": "progressing", "version": "2", "stable": "1", "step": 1, "percent": 50,
        "step_started": began, "unjudged_since": None, "reason": "", "outcome": None,
    }  # fmt: skip
    fake_api.put(lease_path(name), lease_with_record(name, record))
    prometheus = canned({"1": HEALTHY, "2": HEALTHY})
    args = build_parser({}).parse_args(
        [
            "controller",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            NAMESPACE,
            "--model-name",
            name,
            "--tracking-uri",
            registry_model.tracking_uri,
            "--prometheus-url",
            prometheus.url,
            *FAST,
        ]
    )
    settings = settings_from_args(args)
    reconciler = Reconciler(
        Rollout(settings), ControllerConfig(settings.schedule, 0.3, 1.5), ControllerMetrics()
    )
    delay = reconciler.tick()
    assert delay == pytest.approx(0.3)  # the soak of the step just sent
    assert predictor_spec(fake_api, path)["canaryTrafficPercent"] == 50
    [patch] = fake_api.patches()
    assert patch.body["spec"] == {"predictor": {"canaryTrafficPercent": 50}}
    assert reconciler.progress.step_started == began  # the window the record began
    assert fake_api.event_reasons() == []  # no decision taken: the record's is finished

    # An unreadable record is refused with how to start over, and nothing is patched.
    broken = lease_with_record(name, record)
    broken["metadata"]["annotations"][ANNOTATION] = "{not json"
    fake_api.put(lease_path(name), broken)
    fresh = Reconciler(
        Rollout(settings), ControllerConfig(settings.schedule, 0.3, 1.5), ControllerMetrics()
    )
    for _ in range(2):  # every tick, not only the first: it never takes the lease over
        with pytest.raises(RefusedError, match="kubectl delete lease"):
            fresh.tick()
    assert len(fake_api.patches()) == 1
    assert fake_api.get(lease_path(name))["metadata"]["annotations"][ANNOTATION] == "{not json"


def test_the_rollback_clears_the_zero_only_once_the_restored_revision_is_ready_even_across_a_kill(
    fake_api: FakeApiServer,
    make_isvc: Any,
    registry_model: RegistryModel,
    canned: Callable[[dict[str, VersionNumbers]], CannedPrometheus],
    start_controller: Callable[..., Controller],
) -> None:
    """KServe makes a new revision for the restored spec; until it is Ready the latest ready
    revision is the rejected canary's, so `canaryTrafficPercent: 0` must stay. A SIGKILL
    in that wait: the restarted controller finishes the cleanup from the record."""
    fake_api.revisions = "pending"  # new revisions are not Ready until the test says so
    path = make_isvc("1")
    prometheus = canned({"1": HEALTHY, "2": ERRORING})
    first = start_controller(prometheus.url)

    def restored() -> bool:
        return record(fake_api, registry_model.name).get("settle_since") is not None

    wait_until(restored, DEADLINE, "the stable spec's restore", interval=0.1)
    progress = record(fake_api, registry_model.name)
    assert progress["phase"] == "rolling_back"
    assert progress["canary_revision"] == f"{registry_model.name}-predictor-00002"
    time.sleep(1.0)  # several settle ticks: none may clear the field
    spec = predictor_spec(fake_api, path)
    assert spec["canaryTrafficPercent"] == 0
    assert model_uri(spec) == f"models:/{registry_model.name}/1"
    assert not any(r in ENDS for r in fake_api.event_reasons())
    os.killpg(first.process.popen.pid, signal.SIGKILL)
    first.process.popen.wait(10)

    fake_api.revision_ready(path)  # the restored revision (00003) is Ready now
    ready_at = len(fake_api.requests)
    second = start_controller(prometheus.url)
    wait_for_end(fake_api, registry_model.name, second, "RolloutRolledBack")

    assert "canaryTrafficPercent" not in predictor_spec(fake_api, path)
    clears = [
        i
        for i, r in enumerate(fake_api.requests)
        if r.method == "PATCH"
        and r.body.get("spec") == {"predictor": {"canaryTrafficPercent": None}}
    ]
    assert len(clears) == 1 and clears[0] > ready_at  # only after the revision was Ready
    assert "RolloutSpecKeepsZero" not in fake_api.event_reasons()


def test_a_restored_revision_that_never_gets_ready_keeps_the_zero_with_a_warning(
    fake_api: FakeApiServer,
    make_isvc: Any,
    registry_model: RegistryModel,
    canned: Callable[[dict[str, VersionNumbers]], CannedPrometheus],
    start_controller: Callable[..., Controller],
) -> None:
    fake_api.revisions = "pending"
    path = make_isvc("1")
    prometheus = canned({"1": HEALTHY, "2": ERRORING})
    controller = start_controller(prometheus.url, "--ready-timeout", "1")
    wait_for_end(fake_api, registry_model.name, controller, "RolloutRolledBack")

    assert predictor_spec(fake_api, path)["canaryTrafficPercent"] == 0  # stable keeps 100 %
    kept = next(e for e in fake_api.events if e["reason"] == "RolloutSpecKeepsZero")
    assert kept["type"] == "Warning"
    assert f"{registry_model.name}-predictor-00003 is not Ready" in kept["message"]
    assert "--ready-timeout 1s" in kept["message"]
    assert registry_model.tags("2")["rollout_status"] == "rejected"
