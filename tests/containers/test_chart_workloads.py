"""The chart's own workloads as real containers, each started from its rendered pod spec
(tests/containers/pod_runner.py says what is taken from the spec and what is mapped):
MLflow from its Deployment, the training Job registering a model in it, the predictor from
the InferenceService turning ready and answering V2, the `helm test` pod succeeding against
it, then a second training run and a canary predictor answering with the new version. The
security context is applied for real, and a write outside the declared volumes fails.
Run by `make container-check`, which builds the image first."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from tests.chart.render import Rendered, render
from tests.chart.validation import containers_of
from tests.containers.conftest import IMAGE
from tests.containers.pod_runner import Podman, PodRun, pod_run
from tests.support import PYTHON, REPO_ROOT, last_json

MODEL = "breast-cancer"
PREDICTOR = "kserve-container"  # KServe's name for the predictor's container
# A short training run whose model does not depend on timing noise, so the second run
# reproduces the first and passes the no-regression gate. Rendered into the Job's env.
VALUES: dict[str, Any] = {"training": {"settings": {"smoke": True, "latencyMargin": 0}}}
CANARY_VALUES: dict[str, Any] = {
    **VALUES,
    "predictor": {"modelVersion": "2", "canaryTrafficPercent": 10},
}


@pytest.fixture(scope="module")
def chart() -> Rendered:
    rendered = render(VALUES)
    images = {c["image"] for obj in rendered.objects for c in containers(obj)}
    assert images == {IMAGE}, f"the chart runs {images}, the check built {IMAGE}"
    return rendered


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [container for _, _, container in containers_of(obj)]


def pod_spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a Deployment, Job, Pod or InferenceService (its predictor)."""
    [pod_spec] = {id(spec): spec for _, spec, _ in containers_of(obj)}.values()
    found: dict[str, Any] = pod_spec
    return found


def one_container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    [container] = [c for c in pod_spec["containers"] if c["name"] == name]
    found: dict[str, Any] = container
    return found


class Pods:
    """Creates pods on one network and removes them all (and their volumes) at the end."""

    def __init__(self, podman: Podman, network: str) -> None:
        self.podman, self.network = podman, network
        self.created: list[PodRun] = []

    def create(self, run: PodRun) -> PodRun:
        for volume in run.volumes:
            self.podman.run("volume", "create", *volume)
        self.podman.run("pod", "create", *run.create_args)
        self.created.append(run)
        return run

    def start(self, run: PodRun) -> PodRun:
        """Create the pod and start every container of it in the background."""
        self.create(run)
        for args in run.containers.values():
            self.podman.run("run", "--detach", *args, timeout=120)
        return run

    def run_to_completion(self, run: PodRun, timeout: float) -> subprocess.CompletedProcess[str]:
        """A Job's or a test's pod: its one container in the foreground, with its output."""
        self.create(run)
        [args] = run.containers.values()
        return self.podman.run("run", *args, timeout=timeout, check=False)

    def logs(self, name: str) -> str:
        done = self.podman.run("logs", "--tail", "60", name, check=False)
        return done.stdout + done.stderr

    def running(self, name: str) -> bool:
        done = self.podman.run("inspect", "--format", "{{.State.Running}}", name, check=False)
        return done.stdout.strip() == "true"

    def wait_probe(self, run: PodRun, container: str, kind: str, timeout: float) -> None:
        """Poll a container's own probe endpoint (as a kubelet would) until it answers 2xx."""
        url, name = run.probe_url(container, kind), run.container_name(container)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running(name):
                pytest.fail(f"{name} exited before its {kind} passed:\n{self.logs(name)}")
            try:
                if requests.get(url, timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        pytest.fail(f"{name}: {kind} {url} not ready in {timeout}s:\n{self.logs(name)}")

    def remove_all(self) -> None:
        for run in reversed(self.created):
            self.podman.run("pod", "rm", "--force", "--time", "5", run.name, check=False)
            for volume in run.volumes:
                self.podman.run("volume", "rm", "--force", volume[-1], check=False)


@pytest.fixture(scope="module")
def pods(podman: Podman, network: str) -> Iterator[Pods]:
    started = Pods(podman, network)
    try:
        yield started
    finally:
        started.remove_all()


@pytest.fixture(scope="module")
def mlflow(chart: Rendered, pods: Pods, network: str) -> Iterator[PodRun]:
    """MLflow's pod from its Deployment (the server and its metrics sidecar), reachable on
    the network by its Service's name."""
    service = chart.one("Service", "-mlflow")
    pod_spec = pod_spec_of(chart.one("Deployment", "-mlflow"))
    [port] = service["spec"]["ports"]
    [declared] = [p for p in one_container(pod_spec, "mlflow")["ports"]
                  if p["name"] == port["targetPort"]]  # fmt: skip
    # The alias stands for the Service only because it listens on the container's port.
    assert port["port"] == declared["containerPort"]
    [claim] = [v["persistentVolumeClaim"]["claimName"] for v in pod_spec["volumes"]
               if "persistentVolumeClaim" in v]  # fmt: skip
    volume = f"{network}-{claim}"
    pods.podman.run("volume", "create", volume)
    try:
        run = pod_run(pod_spec, name=f"{network}-mlflow", network=network,
                      aliases=[service["metadata"]["name"]], claims={claim: volume})  # fmt: skip
        pods.start(run)
        pods.wait_probe(run, "mlflow", "startupProbe", 180)
        pods.wait_probe(run, "mlflow", "readinessProbe", 30)
        pods.wait_probe(run, "metrics", "readinessProbe", 30)
        yield run
    finally:
        pods.remove_all()
        pods.podman.run("volume", "rm", "--force", volume, check=False)


def train(chart: Rendered, pods: Pods, network: str, suffix: str) -> dict[str, Any]:
    name = f"{network}-train-{suffix}"
    # The kubelet fills TRAINING_JOB_UID from the Job's controller-uid label, one per Job
    # (its retries share it): here each training run stands for a Job of its own.
    env = {"training": {"TRAINING_JOB_UID": name}}
    run = pod_run(pod_spec_of(chart.one("Job")), name=name, network=network, env=env)
    done = pods.run_to_completion(run, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary: dict[str, Any] = last_json(done.stdout)
    return summary


@pytest.fixture(scope="module")
def first_version(chart: Rendered, pods: Pods, network: str, mlflow: PodRun) -> str:
    summary = train(chart, pods, network, "1")
    assert (summary["status"], summary["model_name"]) == ("registered", MODEL)
    assert "champion" in summary["aliases_set"]
    return str(summary["version"])


def test_mlflow_from_its_deployment_serves_health_and_metrics(
    mlflow: PodRun, chart: Rendered
) -> None:
    base = mlflow.url(5000)
    assert requests.get(f"{base}/health", timeout=10).ok
    # The sidecar serves MLflow's own metrics (the multiprocess files in the shared /tmp)
    # on the port the PodMonitor scrapes, apart from the API.
    requests.get(f"{base}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    sidecar = requests.get(mlflow.probe_url("metrics", "readinessProbe"), timeout=10).text
    assert "mlflow_http_request_total" in sidecar


def test_the_training_job_registers_the_first_version_through_the_service_name(
    first_version: str, chart: Rendered
) -> None:
    [container] = pod_spec_of(chart.one("Job"))["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert urlsplit(env["MLFLOW_TRACKING_URI"]).hostname == chart.one("Service")["metadata"]["name"]
    assert first_version == "1"


def predictor_run(rendered: Rendered, network: str, name: str, aliases: list[str]) -> PodRun:
    pod_spec = pod_spec_of(rendered.one("InferenceService"))
    return pod_run(pod_spec, name=f"{network}-{name}", network=network, aliases=aliases)


def helm_test_urls(chart: Rendered) -> tuple[str, str]:
    """The `helm test` pod's PREDICTOR_URL, and the same with the container's port: Knative
    listens on port 80 and forwards to the container's port, which a podman alias cannot."""
    [container] = pod_spec_of(chart.one("Pod"))["containers"]
    url = {e["name"]: e["value"] for e in container["env"]}["PREDICTOR_URL"]
    parts = urlsplit(url)
    assert parts.port is None, url
    [predictor] = pod_spec_of(chart.one("InferenceService"))["containers"]
    [port] = predictor["ports"]
    return url, urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port['containerPort']}"))


@pytest.fixture(scope="module")
def predictor(chart: Rendered, pods: Pods, network: str, first_version: str) -> PodRun:
    """The predictor from the InferenceService's predictor spec, by the host name the
    `helm test` pod uses (the InferenceService's cluster-local address)."""
    url, _ = helm_test_urls(chart)
    run = predictor_run(chart, network, "predictor", [str(urlsplit(url).hostname)])
    pods.start(run)
    pods.wait_probe(run, PREDICTOR, "readinessProbe", 180)
    return run


def v2_answer(url: str) -> dict[str, Any]:
    done = subprocess.run(
        [PYTHON, "scripts/v2_request.py", "--url", url, "--model", MODEL],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = last_json(done.stdout)
    return answer


def test_the_predictor_turns_ready_and_answers_v2(predictor: PodRun) -> None:
    answer = v2_answer(predictor.url(8080))
    assert answer["model_version"] == "1"
    outputs = {output["name"]: output["data"] for output in answer["outputs"]}
    assert outputs["class_name"] == ["malignant", "benign"]
    live = requests.get(predictor.probe_url(PREDICTOR, "livenessProbe"), timeout=5)
    assert live.ok, live.text


def test_the_helm_test_pod_succeeds_against_the_predictor(
    chart: Rendered, pods: Pods, network: str, predictor: PodRun
) -> None:
    pod_spec = pod_spec_of(chart.one("Pod"))
    [container] = pod_spec["containers"]
    _, url = helm_test_urls(chart)
    run = pod_run(pod_spec, name=f"{network}-helm-test", network=network,
                  env={container["name"]: {"PREDICTOR_URL": url}})  # fmt: skip
    done = pods.run_to_completion(run, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["model_name"] == MODEL and answer["model_version"] == "1"


# What a process of the predictor may write: only its declared volume (the /tmp emptyDir).
WRITE_PROBE = """
import errno
for path in ("/tmp/probe", "/probe", "/opt/venv/probe", "/etc/probe", "/var/tmp/probe",
             "/run/probe", "/home/probe"):
    try:
        open(path, "w").close()
        print(path, "written")
    except OSError as e:
        print(path, errno.errorcode[e.errno])
"""


def test_the_security_context_holds_inside_the_predictor(predictor: PodRun, pods: Pods) -> None:
    name = predictor.container_name(PREDICTOR)
    status = pods.podman.run("exec", name, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    # The model server itself (PID 1): uid and gid 10001, no capability, no new privileges.
    assert fields["Uid"].split()[:2] == ["10001", "10001"], fields["Uid"]
    assert fields["Gid"].split()[:2] == ["10001", "10001"], fields["Gid"]
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[capabilities], 16) == 0, (capabilities, fields[capabilities])
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"  # a filter: the runtime's default profile
    done = pods.podman.run("exec", name, "python", "-c", WRITE_PROBE)
    results = dict(line.split(" ", 1) for line in done.stdout.strip().splitlines())
    assert results.pop("/tmp/probe") == "written"
    assert set(results.values()) == {"EROFS"}, results
    mounts = pods.podman.run("exec", name, "cat", "/proc/mounts").stdout
    [tmp] = [line for line in mounts.splitlines() if line.split()[1] == "/tmp"]
    assert tmp.split()[2] == "tmpfs" and "size=1048576k" in tmp, tmp  # sizeLimit: 1Gi


def test_a_second_training_and_a_canary_predictor_answer_with_the_new_version(
    chart: Rendered, pods: Pods, network: str, predictor: PodRun
) -> None:
    summary = train(chart, pods, network, "2")
    assert (summary["status"], summary["version"]) == ("registered", "2"), summary
    canary_chart = render(CANARY_VALUES)
    assert canary_chart.one("InferenceService")["spec"]["predictor"]["canaryTrafficPercent"] == 10
    canary = pods.start(predictor_run(canary_chart, network, "canary", []))
    pods.wait_probe(canary, PREDICTOR, "readinessProbe", 180)
    assert v2_answer(canary.url(8080))["model_version"] == "2"
    assert v2_answer(predictor.url(8080))["model_version"] == "1"  # stable keeps serving v1


def test_the_image_runs_as_the_chart_s_numeric_non_root_user(
    podman: Podman, chart: Rendered
) -> None:
    user = podman.run("image", "inspect", "--format", "{{.Config.User}}", IMAGE).stdout.strip()
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0, "kubelet checks runAsNonRoot by UID"
    context = chart.values["containerSecurityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))


def test_the_image_has_every_driver_the_chart_can_ask_for(
    chart: Rendered, pods: Pods, network: str
) -> None:
    """PostgreSQL (psycopg), S3 (boto3), MLflow's /metrics, the predictor and training: the
    MLflow server's container with its command replaced by the imports."""
    pod_spec = pod_spec_of(chart.one("Deployment", "-mlflow"))
    container = one_container(pod_spec, "mlflow")
    imports = (
        "import psycopg, boto3, prometheus_flask_exporter, kserve, mlflow, sklearn, skops,"
        " training.pipeline, serving.model; print('ok')"
    )
    tmp_only = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    probe = {
        **container,
        "command": ["python", "-c", imports],
        "args": [],
        "volumeMounts": tmp_only,
    }
    run = pod_run({**pod_spec, "containers": [probe]}, name=f"{network}-imports", network=network)
    done = pods.run_to_completion(run, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
