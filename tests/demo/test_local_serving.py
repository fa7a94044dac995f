"""`python -m demo.local_serving` for real: a local cluster folder, a real `mlflow server`
with two trained versions, real predictor processes, and V2 requests through its router.

The InferenceService is written the way the rollout writes it (rollout/isvc.py's patches
through the LocalCluster), and every assertion reads what KServe would report in status.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from contract.local_cluster import LocalCluster
from demo.local_serving import chart_inference_service
from loadtest import v2
from rollout import isvc
from tests.support import (
    PYTHON,
    MlflowServer,
    Process,
    free_port,
    start_process,
    train_version,
    wait_until,
)

pytestmark = pytest.mark.integration

NAME = "local-serving"
DEADLINE = 150.0
ROW = v2.load_rows("breast_cancer")[0].tolist()  # row 0 of the Wisconsin set
BODY = {"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP64", "data": ROW}]}


@dataclass
class Serving:
    cluster: LocalCluster
    process: Process
    url: str
    slots: tuple[int, int]
    versions: tuple[str, str]
    grpc_port: int

    def isvc(self) -> dict[str, Any]:
        return self.cluster.get("inferenceservices", NAME)

    def predictor(self) -> dict[str, Any]:
        return dict(self.isvc().get("status", {}).get("components", {}).get("predictor", {}))

    def condition(self, kind: str) -> dict[str, Any]:
        conditions = self.isvc().get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == kind), {})

    def patch(self, make: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        obj = self.isvc()
        self.cluster.merge_patch("inferenceservices", NAME, make(obj))

    def wait(self, what: str, check: Callable[[], bool]) -> None:
        def done() -> bool:
            assert self.process.alive(), f"local serving exited:\n{self.process.log()}"
            return check()

        try:
            wait_until(done, DEADLINE, what, interval=0.2)
        except TimeoutError as e:
            raise AssertionError(
                f"{e}\nstatus: {json.dumps(self.isvc().get('status'), indent=1)}\n"
                f"log:\n{self.process.log()[-3000:]}"
            ) from e

    def traffic(self) -> dict[str, int]:
        return {t["revisionName"]: t["percent"] for t in self.predictor().get("traffic", [])}

    def versions_answering(self, count: int) -> Counter[str]:
        answers: Counter[str] = Counter()
        with requests.Session() as session:
            for _ in range(count):
                response = session.post(f"{self.url}/v2/models/{NAME}/infer", json=BODY, timeout=10)
                assert response.status_code == 200, response.text
                answers[str(response.json()["model_version"])] += 1
        return answers


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# Triton's gRPC stubs and KServe's share protobuf names, so the client runs in a child
# process (as in tests/serving/test_v2_clients.py).
GRPC_METADATA = """
import json, sys
import tritonclient.grpc as triton
client = triton.InferenceServerClient(sys.argv[1])
print(json.dumps(client.get_model_metadata(sys.argv[2], as_json=True)["versions"]))
"""


def grpc_versions(port: int) -> list[str]:
    done = subprocess.run(
        [PYTHON, "-c", GRPC_METADATA, f"127.0.0.1:{port}", NAME],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    versions: list[str] = json.loads(done.stdout)
    return versions


def revision(number: int) -> str:
    return f"{NAME}-predictor-{number:05d}"


@pytest.fixture(scope="module")
def serving(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Serving]:
    folder = tmp_path_factory.mktemp("local-serving")
    first = train_version(mlflow_server.url, NAME, folder / "train-1.log", "--candidates", "logreg")
    second = train_version(
        mlflow_server.url, NAME, folder / "train-2.log",
        "--candidates", "logreg", "--seed", "7", "--max-regression", "1",
    )  # fmt: skip
    cluster = LocalCluster(folder / "cluster")
    cluster.create(
        "inferenceservices",
        chart_inference_service(NAME, f"models:/{NAME}@champion", mlflow_server.url),
    )
    port, grpc_port, slots = free_port(), free_port(), (free_port(), free_port())
    process = start_process(
        [
            PYTHON, "-m", "demo.local_serving", "--dir", str(cluster.folder), "--name", NAME,
            "--port", str(port), "--grpc-port", str(grpc_port),
            "--slot", f"{slots[0]}:{free_port()}", "--slot", f"{slots[1]}:{free_port()}",
            "--log-dir", str(folder / "logs"), "--interval", "0.2",
            "--progress-deadline", "8",
        ],
        folder / "local-serving.log",
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        yield Serving(cluster, process, url, slots, (first, second), grpc_port)
    finally:
        process.stop()
    # Its predictors stop with it: no slot is left listening.
    assert not any(listening(p) for p in slots), "a predictor outlived local serving"


def test_the_lifecycle_of_an_inference_service_as_kserve_reports_it(serving: Serving) -> None:
    first, second = serving.versions

    # Created: one revision, Ready, all the traffic, rolled out.
    serving.wait("the first revision", lambda: serving.condition("Ready").get("status") == "True")
    predictor = serving.predictor()
    assert predictor["latestCreatedRevision"] == revision(1)
    assert predictor["latestReadyRevision"] == revision(1)
    assert predictor["latestRolledoutRevision"] == revision(1)
    assert serving.traffic() == {revision(1): 100}
    assert serving.isvc()["status"]["observedGeneration"] == 1
    assert serving.versions_answering(3) == {first: 3}
    assert isvc.parse(serving.isvc()).ready is True
    # gRPC through the relay reaches the revision's own gRPC port.
    assert grpc_versions(serving.grpc_port) == [first]

    # A canary at 25 %: a second revision on the other slot, the split near 25 %.
    serving.patch(lambda o: isvc.start_patch(o, f"models:/{NAME}/{second}", 25))
    serving.wait(
        "the canary's revision",
        lambda: (
            serving.traffic() == {revision(2): 25, revision(1): 75}
            and serving.condition("Ready").get("status") == "True"
        ),
    )
    prev = next(t for t in serving.predictor()["traffic"] if t["revisionName"] == revision(1))
    assert prev["tag"] == "prev" and prev["latestRevision"] is False
    assert serving.predictor()["latestRolledoutRevision"] == revision(1)
    answers = serving.versions_answering(400)
    # Binomial(400, 0.25): mean 100, sd 8.7; 60..140 is beyond 4.5 sd either side.
    assert 60 <= answers[second] <= 140, answers
    assert answers[first] + answers[second] == 400

    # Promote: 100 % to the canary, which is rolled out; the old revision's process stops.
    serving.patch(isvc.promote_patch)
    serving.wait(
        "the promotion",
        lambda: (
            serving.predictor().get("latestRolledoutRevision") == revision(2)
            and not listening(serving.slots[0])
        ),
    )
    assert serving.predictor()["previousRolledoutRevision"] == revision(1)
    assert serving.traffic() == {revision(2): 100}
    assert serving.versions_answering(20) == {second: 20}

    # A canary of the first version, rolled back as the rollout does: 0 %, then the
    # stable spec restored (a new revision that reuses the stable revision's process).
    serving.patch(lambda o: isvc.start_patch(o, f"models:/{NAME}/{first}", 50))
    serving.wait("the second canary", lambda: serving.traffic().get(revision(3)) == 50)
    serving.patch(lambda o: isvc.traffic_patch(o, 0))
    serving.patch(lambda o: isvc.restore_patch(o, f"models:/{NAME}/{second}"))
    serving.wait(
        "the rollback",
        lambda: (
            serving.traffic() == {revision(4): 0, revision(2): 100}
            and serving.predictor().get("latestReadyRevision") == revision(4)
            and not listening(serving.slots[0])
        ),
    )
    assert serving.predictor()["latestRolledoutRevision"] == revision(2)
    assert serving.condition("Ready")["status"] == "True"
    assert serving.versions_answering(20) == {second: 20}
    assert "reuses the process" in serving.process.log()

    # A canary that never turns ready (no such version): Ready False with the reason and
    # its log; Knative keeps routing the latest target to the latest READY revision.
    serving.patch(lambda o: isvc.start_patch(o, f"models:/{NAME}/99", 10))
    serving.wait("the failed revision", lambda: serving.condition("Ready").get("status") == "False")
    ready = serving.condition("Ready")
    assert ready["reason"] == "RevisionFailed"
    assert revision(5) in ready["message"] and "ProgressDeadlineExceeded" in ready["message"]
    assert f"{revision(5)}.log" in ready["message"]
    state = isvc.parse(serving.isvc())
    assert state.ready is False and "RevisionFailed" in state.ready_reason
    assert serving.predictor()["latestCreatedRevision"] == revision(5)
    assert serving.predictor()["latestReadyRevision"] == revision(4)
    assert serving.versions_answering(20) == {second: 20}
