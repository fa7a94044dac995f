"""The whole thing on a kind cluster: `make kind-up images deploy`, the InferenceService
Ready and answering V2 through Kourier, `helm test`, then a rollout driven by the chart's
values: a canary at 10 % where both versions answer, a promotion, and a rolled-back canary;
then `python -m rollout` itself (start, analyze, promote, rollback, auto) with nothing but
the chart's rollout ServiceAccount token, so its Role is proven sufficient; last the
in-cluster controller (`rollout.controller.enabled`): a new version promoted and a
flipped-label one rolled back with no command typed, and `make deploy` with a new image
after the promotion keeping the promoted version.

Runs only against a reachable kind cluster (`make kind-up` first, or CI's workflow);
anywhere else it is skipped with the reason. MLOPS_E2E_REQUIRED=1 turns the skip into a
failure, so CI cannot pass by skipping. It installs into a namespace of its own
(E2E_NAMESPACE, default `mlops-e2e`), which it deletes and recreates at the start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.e2e import flipped
from tests.support import REPO_ROOT, Process, free_port, start_process, wait_until

pytestmark = pytest.mark.e2e

CLUSTER = os.environ.get("CLUSTER_NAME", "mlops")
CONTEXT = f"kind-{CLUSTER}"
NAMESPACE = os.environ.get("E2E_NAMESPACE", "mlops-e2e")
RELEASE = NAMESPACE
MODEL = "breast-cancer"
# A short training run whose model does not depend on timing noise: runs 2 and 3 then
# reproduce run 1 and pass the no-regression gate.
TRAINING_VALUES = " ".join(
    f"--set training.settings.{key}={str(value).lower()}"
    for key, value in flipped.E2E_TRAINING_SETTINGS.items()
)
# The rollout tool's own ServiceAccount and Role: the e2e runs it with that identity only.
DEPLOY_VALUES = f"{TRAINING_VALUES} --set rollout.rbac.create=true"
ROLLOUT_ACCOUNT = f"{RELEASE}-rollout"  # `<fullname>-rollout`; the release names the chart
MAKE_SETTINGS = [f"CLUSTER_NAME={CLUSTER}", f"NAMESPACE={NAMESPACE}", f"RELEASE={RELEASE}"]


def unavailable(reason: str) -> None:
    if os.environ.get("MLOPS_E2E_REQUIRED", "") in {"1", "true"}:
        pytest.fail(f"e2e required but {reason}", pytrace=False)
    pytest.skip(f"e2e: {reason}")


def run(*args: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(args), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        output = f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        pytest.fail(f"{' '.join(args)} exited {done.returncode}:\n{output}")
    return done


def kubectl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run("kubectl", "--context", CONTEXT, *args, timeout=timeout)


def helm_upgrade(*sets: str) -> None:
    # Not --reuse-values: its `=null` leaves the old number in the manifest (Helm #30765).
    flags = [part for value in sets for part in ("--set", value)]
    run("helm", "--kube-context", CONTEXT, "upgrade", RELEASE, "charts/mlops", "-n", NAMESPACE,
        "--reset-then-reuse-values", *flags, "--timeout", "10m")  # fmt: skip


@pytest.fixture(scope="module")
def kind_cluster() -> str:
    """Skip (or fail when required) unless the kind cluster answers."""
    if shutil.which("kubectl") is None:
        unavailable("'kubectl' is not installed")
    contexts = run("kubectl", "config", "get-contexts", "-o", "name", check=False, timeout=60)
    if contexts.returncode != 0 or not contexts.stdout.strip():
        unavailable(f"no kubeconfig with a context ({contexts.stderr.strip() or 'none'})")
    if CONTEXT not in contexts.stdout.split():
        unavailable(f"no kubeconfig context {CONTEXT} (`make kind-up` creates the cluster)")
    info = run("kubectl", "--context", CONTEXT, "cluster-info", check=False, timeout=60)
    if info.returncode != 0:
        unavailable(f"`kubectl cluster-info` fails for {CONTEXT}: {info.stderr.strip()[:300]}")
    for tool in ("kind", "helm", "docker"):
        if shutil.which(tool) is None:
            unavailable(f"the cluster answers but '{tool}' is not installed")
    return CONTEXT


@pytest.fixture(scope="module")
def deployed(kind_cluster: str) -> None:
    """`make kind-up images deploy` into a fresh namespace (kind-up only checks, when done)."""
    run("make", "kind-up", *MAKE_SETTINGS, timeout=3600)
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", timeout=600)
    run("make", "images", *MAKE_SETTINGS, timeout=3600)
    run("make", "deploy", *MAKE_SETTINGS, f"HELM_ARGS={DEPLOY_VALUES}", timeout=3600)


@dataclass
class Ingress:
    url: str
    host: str
    forward: Process

    def infer(self, row: list[float] | None = None) -> dict[str, Any]:
        data = [0.5] * 30 if row is None else row
        body = {"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP64",
                            "data": data}]}  # fmt: skip
        response = requests.post(
            f"{self.url}/v2/models/{MODEL}/infer",
            json=body,
            headers={"Host": self.host},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    @contextmanager
    def sampled(
        self, seconds: float = 1500, rows: list[list[float]] | None = None
    ) -> Iterator[Counter[str]]:
        """Keep asking in the background while the block runs (bounded in time), counting
        answers by model version and failures as `failed`; with `rows`, cycling through
        them (real rows, for a predicted-class mix the analysis can judge)."""
        seen: Counter[str] = Counter()
        stop = threading.Event()

        def ask() -> None:
            deadline = time.monotonic() + seconds
            sent = 0
            while not stop.is_set() and time.monotonic() < deadline:
                row = rows[sent % len(rows)] if rows else None
                sent += 1
                try:
                    seen[str(self.infer(row)["model_version"])] += 1
                except (AssertionError, requests.RequestException):
                    seen["failed"] += 1
                    time.sleep(0.2)

        sampler = threading.Thread(target=ask, daemon=True)
        sampler.start()
        try:
            yield seen
        finally:
            stop.set()
            sampler.join(timeout=60)

    def versions(self, count: int, seconds: float = 180) -> Counter[str]:
        """Which model versions answer `count` requests (bounded in count and time)."""
        seen: Counter[str] = Counter()
        deadline = time.monotonic() + seconds
        while sum(seen.values()) < count and time.monotonic() < deadline:
            seen[str(self.infer()["model_version"])] += 1
        return seen


@pytest.fixture(scope="module")
def ingress(deployed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingress]:
    """A port-forward to Kourier, and the predictor's host name to route by."""
    isvc = inference_service()
    host = isvc["status"]["components"]["predictor"]["url"].split("://", 1)[1]
    port = free_port()
    forward = start_process(
        ["kubectl", "--context", CONTEXT, "-n", "kourier-system", "port-forward",
         "svc/kourier", f"{port}:80"],
        tmp_path_factory.mktemp("kourier") / "port-forward.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if not forward.alive():
            return True
        try:
            ready = f"{url}/v2/models/{MODEL}/ready"
            return requests.get(ready, headers={"Host": host}, timeout=5).ok
        except requests.RequestException:
            return False

    try:
        wait_until(answers, 120, "the predictor through Kourier")
        assert forward.alive(), forward.log()
        yield Ingress(url=url, host=host, forward=forward)
    finally:
        forward.stop()


def inference_service() -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        kubectl("-n", NAMESPACE, "get", "inferenceservice", MODEL, "-o", "json").stdout
    )
    return found


def predictor_status() -> dict[str, Any]:
    isvc = inference_service()
    ready = any(
        c["type"] == "Ready" and c["status"] == "True" for c in isvc["status"].get("conditions", [])
    )
    current = isvc["status"].get("observedGeneration") == isvc["metadata"]["generation"]
    component: dict[str, Any] = isvc["status"].get("components", {}).get("predictor", {})
    return {"ready": ready and current, **component}


def wait_for_split(percents: list[int], timeout: float = 900) -> dict[str, Any]:
    """Wait until the InferenceService is Ready at this generation with this traffic split."""
    status: dict[str, Any] = {}

    wanted = sorted(p for p in percents if p)

    def settled() -> bool:
        nonlocal status
        status = predictor_status()
        # Knative may list a 0 % target (the rolled-back canary, tagged) or leave it out.
        split = sorted(t["percent"] for t in status.get("traffic", []) if t.get("percent"))
        return bool(status["ready"]) and split == wanted

    try:
        wait_until(settled, timeout, f"traffic split {percents}", interval=5)
    except TimeoutError as e:
        raise AssertionError(f"{e}; last status: {json.dumps(status)}") from e
    return status


def wait_for_new_ready_revision(before: str, timeout: float = 900) -> None:
    """Wait until a revision newer than `before` is created and is the latest ready one."""

    def ready() -> bool:
        status = predictor_status()
        created = status.get("latestCreatedRevision")
        return bool(created) and created != before and status.get("latestReadyRevision") == created

    wait_until(ready, timeout, f"a ready revision after {before}", interval=5)


def train_new_version(*train_helm_args: str) -> str:
    extra = [f"TRAIN_HELM_ARGS={' '.join(train_helm_args)}"] if train_helm_args else []
    done = run("make", "train", *MAKE_SETTINGS, *extra, timeout=2400)
    summary = json.loads(
        next(line for line in reversed(done.stdout.splitlines()) if line.startswith("{"))
    )
    assert summary["status"] == "registered", summary
    return str(summary["version"])


def test_the_inference_service_is_ready_and_answers_v2(ingress: Ingress) -> None:
    status = wait_for_split([100])
    assert status["latestReadyRevision"]
    answer = ingress.infer()
    assert answer["model_name"] == MODEL
    assert answer["model_version"] == "1"
    names = {output["name"] for output in answer["outputs"]}
    assert names == {"label", "probabilities", "class_name"}


def test_helm_test_sends_a_v2_request(deployed: None) -> None:
    done = run("helm", "--kube-context", CONTEXT, "test", RELEASE, "-n", NAMESPACE, "--logs",
               timeout=600)  # fmt: skip
    assert '"model_name": "breast-cancer"' in done.stdout


def test_smoke_target_prints_an_answer(deployed: None) -> None:
    done = run("make", "smoke", *MAKE_SETTINGS, f"INGRESS_PORT={free_port()}", timeout=300)
    assert '"outputs"' in done.stdout


def test_a_canary_at_ten_percent_answers_beside_the_stable_version(ingress: Ingress) -> None:
    version = train_new_version()
    assert version == "2"
    helm_upgrade(f"predictor.modelVersion={version}", "predictor.canaryTrafficPercent=10")
    wait_for_split([10, 90])
    seen = ingress.versions(count=400)
    assert set(seen) == {"1", "2"}, seen
    # 10 % of 400 is 40; 120 would be a split nowhere near what was asked for.
    assert 0 < seen["2"] < 120, seen


def test_promoting_sends_all_traffic_to_the_new_version(ingress: Ingress) -> None:
    helm_upgrade("predictor.canaryTrafficPercent=null")
    wait_for_split([100])
    seen = ingress.versions(count=60)
    assert set(seen) == {"2"}, seen


def test_rolling_back_a_canary_returns_all_traffic_to_stable(ingress: Ingress) -> None:
    version = train_new_version()
    assert version == "3"
    helm_upgrade(f"predictor.modelVersion={version}", "predictor.canaryTrafficPercent=10")
    wait_for_split([10, 90])
    assert set(ingress.versions(count=300)) == {"2", "3"}
    # Roll back in the documented order: all traffic to the previous revision, then the
    # spec back to v2 with the canary still at 0 and its revision ready, then drop the field.
    # Dropping it together with the version would route 100 % to the latest *ready*
    # revision, v3, until the restored one is ready: no answer may come from v3.
    helm_upgrade("predictor.canaryTrafficPercent=0")
    wait_for_split([0, 100])
    with ingress.sampled() as seen:
        before = predictor_status()["latestCreatedRevision"]
        helm_upgrade("predictor.modelVersion=2", "predictor.canaryTrafficPercent=0")
        wait_for_new_ready_revision(before)
        helm_upgrade("predictor.canaryTrafficPercent=null")
        wait_for_split([100])
        assert set(ingress.versions(count=60)) == {"2"}
    assert "3" not in seen, seen
    assert seen["2"] > 0 and seen["failed"] <= seen["2"] // 100, seen


# --- python -m rollout on the cluster, as its own ServiceAccount ---------------------------


@dataclass
class RolloutTool:
    kubeconfig: str
    tracking_uri: str
    prometheus_url: str
    mlflow_forward: Process
    folder: Any

    def reconnect_mlflow(self) -> None:
        """A new port-forward to MLflow: one to a pod ends with that pod (a new image
        replaces MLflow's pod, Recreate)."""
        self.mlflow_forward.stop()
        kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{RELEASE}-mlflow",
                "--timeout=600s", timeout=660)  # fmt: skip
        self.tracking_uri, self.mlflow_forward = port_forward(
            f"svc/{RELEASE}-mlflow", NAMESPACE, 5000, self.folder
        )

    def __call__(
        self, command: str, *args: str, timeout: float = 1200
    ) -> subprocess.CompletedProcess[str]:
        where = [
            "--model-name", MODEL, "--isvc", MODEL, "--namespace", NAMESPACE,
            "--kubeconfig", self.kubeconfig, "--tracking-uri", self.tracking_uri,
            "--prometheus-url", self.prometheus_url,
        ]  # fmt: skip
        return run(sys.executable, "-m", "rollout", command, *where, *args,
                   timeout=timeout, check=False)  # fmt: skip

    def champion(self) -> str:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        return str(client.get_model_version_by_alias(MODEL, "champion").version)

    def tags(self, version: str) -> dict[str, str]:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        return dict(client.get_model_version(MODEL, version).tags)


def port_forward(target: str, namespace: str, port: int, folder: Any) -> tuple[str, Process]:
    local = free_port()
    forward = start_process(
        ["kubectl", "--context", CONTEXT, "-n", namespace, "port-forward", target,
         f"{local}:{port}"],
        folder / f"{target.replace('/', '-')}.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{local}"

    def answers() -> bool:
        if not forward.alive():
            return True
        try:
            requests.get(url, timeout=5)
            return True
        except requests.RequestException:
            return False

    wait_until(answers, 60, f"a port-forward to {target}")
    assert forward.alive(), forward.log()
    return url, forward


@pytest.fixture(scope="module")
def rollout_tool(deployed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RolloutTool]:
    """The tool with a kubeconfig holding only the rollout ServiceAccount's token, and
    port-forwards to the release's MLflow and to Prometheus."""
    folder = tmp_path_factory.mktemp("rollout")
    token = kubectl("-n", NAMESPACE, "create", "token", ROLLOUT_ACCOUNT, "--duration=2h")
    view = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    cluster = view["clusters"][0]["cluster"]
    kubeconfig = folder / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kind", "cluster": cluster}],
                "users": [{"name": ROLLOUT_ACCOUNT, "user": {"token": token.stdout.strip()}}],
                "contexts": [
                    {
                        "name": "rollout",
                        "context": {
                            "cluster": "kind",
                            "user": ROLLOUT_ACCOUNT,
                            "namespace": NAMESPACE,
                        },
                    }
                ],
                "current-context": "rollout",
            }
        )
    )
    mlflow_url, mlflow_forward = port_forward(f"svc/{RELEASE}-mlflow", NAMESPACE, 5000, folder)
    prometheus_url, prometheus_forward = port_forward(
        "svc/kube-prometheus-stack-prometheus", "monitoring", 9090, folder
    )
    tool = RolloutTool(str(kubeconfig), mlflow_url, prometheus_url, mlflow_forward, folder)
    try:
        yield tool
    finally:
        tool.mlflow_forward.stop()
        prometheus_forward.stop()


def test_the_rollout_identity_may_get_and_patch_the_inference_service_and_its_lock_only(
    rollout_tool: RolloutTool,
) -> None:
    def can(*args: str) -> str:
        done = run("kubectl", "--kubeconfig", rollout_tool.kubeconfig, "auth", "can-i", *args,
                   check=False, timeout=60)  # fmt: skip
        return done.stdout.strip()

    assert can("get", f"inferenceservices.serving.kserve.io/{MODEL}") == "yes"
    assert can("patch", f"inferenceservices.serving.kserve.io/{MODEL}") == "yes"
    assert can("delete", f"inferenceservices.serving.kserve.io/{MODEL}") == "no"
    # The lock of `auto` (rollout/lock.py): a Lease named after the InferenceService.
    assert can("create", "leases.coordination.k8s.io") == "yes"
    assert can("update", f"leases.coordination.k8s.io/{MODEL}-rollout") == "yes"
    assert can("delete", f"leases.coordination.k8s.io/{MODEL}-rollout") == "yes"
    assert can("delete", "leases.coordination.k8s.io/another") == "no"
    assert can("get", "inferenceservices.serving.kserve.io/another") == "no"
    assert can("get", "pods") == "no"
    assert can("get", "secrets") == "no"


JUDGE = ["--window", "2m", "--min-requests", "50", "--match", f'namespace="{NAMESPACE}"']


def test_rollout_start_analyze_promote(rollout_tool: RolloutTool, ingress: Ingress) -> None:
    stable = rollout_tool.champion()
    version = train_new_version()
    started = rollout_tool("start", "--version", version, "--percent", "10")
    assert started.returncode == 0, started.stdout + started.stderr
    wait_for_split([10, 90])
    with ingress.sampled(seconds=600) as seen:
        time.sleep(150)  # two minutes of traffic for the analysis window, and a scrape
        analysis = rollout_tool("analyze", *JUDGE)
    # Pass, fail or inconclusive are verdicts; 2, 4 and 5 would be the tool failing.
    assert analysis.returncode in (0, 1, 3), analysis.stdout + analysis.stderr
    assert json.loads(analysis.stdout.strip().splitlines()[-1])
    assert {stable, version} <= set(seen), seen
    promoted = rollout_tool("promote")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    wait_for_split([100])
    assert set(ingress.versions(count=60)) == {version}
    assert rollout_tool.champion() == version


def test_rollout_rollback(rollout_tool: RolloutTool, ingress: Ingress) -> None:
    stable = rollout_tool.champion()
    version = train_new_version()
    started = rollout_tool("start", "--version", version, "--percent", "10")
    assert started.returncode == 0, started.stdout + started.stderr
    wait_for_split([10, 90])
    assert set(ingress.versions(count=300)) == {stable, version}
    rolled_back = rollout_tool("rollback", "--reason", "e2e: rollback drill")
    assert rolled_back.returncode == 0, rolled_back.stdout + rolled_back.stderr
    wait_for_split([0, 100])
    assert set(ingress.versions(count=60)) == {stable}
    assert rollout_tool.champion() == stable
    # A rejected version is refused the next time (exit 2, nothing changed).
    again = rollout_tool("start", "--version", version)
    assert again.returncode == 2, again.stdout + again.stderr


def test_rollout_auto_ends_promoted_or_rolled_back(
    rollout_tool: RolloutTool, ingress: Ingress
) -> None:
    stable = rollout_tool.champion()
    version = train_new_version()
    second: list[subprocess.CompletedProcess[str]] = []

    def second_auto() -> None:
        # While the first holds the lock (its canary soaks for 150 s), a second one must
        # refuse before touching anything (rollout/lock.py).
        time.sleep(60)
        second.append(rollout_tool("auto", "--version", version, *JUDGE, timeout=300))

    racer = threading.Thread(target=second_auto, daemon=True)
    with ingress.sampled(seconds=1500) as seen:
        racer.start()
        done = rollout_tool(
            "auto", "--version", version, "--steps", "50,100", "--soak", "150",
            "--interval", "20", "--step-timeout", "420", *JUDGE, timeout=1500,
        )  # fmt: skip
    racer.join(300)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert second and second[0].returncode == 2, second
    assert f"holds Lease {NAMESPACE}/{MODEL}-rollout" in second[0].stderr
    lease = run("kubectl", "--context", CONTEXT, "-n", NAMESPACE, "get", "lease",
                f"{MODEL}-rollout", check=False, timeout=60)  # fmt: skip
    assert "NotFound" in lease.stderr  # released at the end
    assert version in seen, seen
    wait_for_split([100] if done.returncode == 0 else [0, 100])
    expected = version if done.returncode == 0 else stable
    assert set(ingress.versions(count=60)) == {expected}
    assert rollout_tool.champion() == expected


def test_the_controller_promotes_a_new_version_with_no_command_typed(
    rollout_tool: RolloutTool, ingress: Ingress
) -> None:
    """`rollout.controller.enabled=true`: a new version trained by `make train` becomes
    @challenger and the controller steps it to 100 % and promotes it on its own; then a
    `helm upgrade` (the chart reads MODEL_URI from the live object) keeps that version."""
    controller = f"{RELEASE}-rollout-controller"
    helm_upgrade(
        "rollout.controller.enabled=true", "rollout.controller.steps=50\\,100",
        "rollout.controller.soakSeconds=60", "rollout.controller.intervalSeconds=15",
        "rollout.controller.stepTimeoutSeconds=600", "rollout.controller.minRequests=20",
        "rollout.controller.pollSeconds=10",
        f"rollout.controller.match=namespace=\"{NAMESPACE}\"",
    )  # fmt: skip
    kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{controller}", timeout=600)
    with ingress.sampled(seconds=1800) as seen:
        version = train_new_version()
        wait_until(lambda: rollout_tool.champion() == version, 1500, "the controller's promotion",
                   interval=10)  # fmt: skip
    assert version in seen, seen
    wait_for_split([100])
    reasons = [e["reason"] for e in isvc_events()]
    assert "RolloutStarted" in reasons and "RolloutPromoted" in reasons, reasons
    tags = rollout_tool.tags(version)
    assert tags["rollout_status"] == "promoted" and "rollout_decision" in tags, tags
    metrics = kubectl("-n", NAMESPACE, "get", "--raw",
                      f"/api/v1/namespaces/{NAMESPACE}/pods/{controller_pod()}:9090/proxy/metrics"
                      ).stdout  # fmt: skip
    assert f'rollout_phase{{model_name="{MODEL}",phase="idle"}} 1.0' in metrics
    # One owner: an upgrade that changes the container keeps the promoted version.
    helm_upgrade("predictor.maxBatchSize=512")
    assert served_model_uri() == f"models:/{MODEL}/{version}"
    assert set(ingress.versions(count=30)) == {version}


def test_make_deploy_with_a_new_image_after_a_promotion_keeps_the_promoted_version(
    rollout_tool: RolloutTool, ingress: Ingress
) -> None:
    """Issue 17's failure: the deploy that ships new code must neither fail nor reset the
    promoted MODEL_URI (the chart renders it from the live object with the controller on)."""
    promoted = rollout_tool.champion()
    before = predictor_status()["latestCreatedRevision"]
    tag = "0.0.0-e2e-redeploy"  # same build, new tag: a new image reference everywhere
    run("make", "images", *MAKE_SETTINGS, f"IMAGE_TAG={tag}", timeout=3600)
    run("make", "deploy", *MAKE_SETTINGS, f"IMAGE_TAG={tag}", timeout=3600)
    rollout_tool.reconnect_mlflow()
    wait_for_new_ready_revision(before)
    wait_for_split([100])
    predictor = inference_service()["spec"]["predictor"]
    assert predictor["containers"][0]["image"].endswith(f":{tag}")
    assert "canaryTrafficPercent" not in predictor
    assert served_model_uri() == f"models:/{MODEL}/{promoted}"
    assert set(ingress.versions(count=30)) == {promoted}
    assert rollout_tool.champion() == promoted


def test_the_controller_rolls_back_a_flipped_label_model_with_no_command_typed(
    rollout_tool: RolloutTool, ingress: Ingress, tmp_path: Any
) -> None:
    """A model trained on the breast-cancer data with its labels flipped passes every
    offline gate (tests/rollout/test_analysis_prometheus.py proves it with the Job's own
    environment) and becomes @challenger; the controller starts its canary on its own, the
    class mix of live traffic fails the analysis, and it rolls back: the decision in an
    Event, in MLflow's tags, @champion unchanged, all traffic on stable."""
    from sklearn.datasets import load_breast_cancer

    stable = rollout_tool.champion()
    config_map = tmp_path / "flipped-config-map.json"
    config_map.write_text(json.dumps(flipped.config_map(NAMESPACE)))
    kubectl("apply", "-f", str(config_map))
    rows = [[float(v) for v in row] for row in load_breast_cancer().data]
    with ingress.sampled(seconds=1800, rows=rows) as seen:
        version = train_new_version("-f", os.path.relpath(flipped.VALUES_FILE, REPO_ROOT))
        wait_until(
            lambda: rollout_tool.tags(version).get("rollout_status") == "rejected",
            1500, "the controller's rollback", interval=10,
        )  # fmt: skip
    assert version in seen, seen  # its canary took traffic before it was judged
    tags = rollout_tool.tags(version)
    assert "class_drift" in tags["rollout_reason"], tags
    assert "rollout_decision" in tags, tags
    assert rollout_tool.champion() == stable
    rolled_back = [e for e in isvc_events() if e["reason"] == "RolloutRolledBack"]
    assert rolled_back and "class_drift" in rolled_back[-1]["message"], rolled_back
    wait_for_split([0, 100])
    assert served_model_uri() == f"models:/{MODEL}/{stable}"
    assert set(ingress.versions(count=60)) == {stable}


def isvc_events() -> list[dict[str, Any]]:
    events = kubectl("-n", NAMESPACE, "get", "events", "--field-selector",
                     f"involvedObject.name={MODEL}", "-o", "json").stdout  # fmt: skip
    items: list[dict[str, Any]] = json.loads(events)["items"]
    return items


def served_model_uri() -> str:
    env = inference_service()["spec"]["predictor"]["containers"][0]["env"]
    return str({e["name"]: e.get("value") for e in env}["MODEL_URI"])


def controller_pod() -> str:
    selector = "app.kubernetes.io/component=rollout-controller"
    pods = kubectl("-n", NAMESPACE, "get", "pods", "-l", selector, "-o", "json").stdout
    return str(json.loads(pods)["items"][0]["metadata"]["name"])
