"""One `auto` per InferenceService at a time: the Lease lock (rollout/lock.py), against the
recording fake API server (real `kubernetes` client, real HTTP), and two real `auto`
processes racing for it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from rollout.__main__ import main
from rollout.errors import LockLostError, RefusedError
from rollout.kube import KubeSettings, connect
from rollout.lock import LEASE_SECONDS, RENEW_EVERY_SECONDS, RolloutLock, micro_time
from tests.rollout.fake_apiserver import FakeApiServer, inference_service
from tests.rollout.fake_prometheus import HEALTHY, QUIET, CannedPrometheus
from tests.rollout.helpers import NAMESPACE, RegistryModel, isvc_path
from tests.support import REPO_ROOT

pytestmark = pytest.mark.integration

AUTO_FAST = ["--soak", "0", "--interval", "0.1", "--step-timeout", "3", "--min-requests", "100"]


def lease_path(isvc_name: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{isvc_name}-rollout"


def put_lease(fake_api: FakeApiServer, isvc_name: str, holder: str, renewed: float) -> None:
    fake_api.put(
        lease_path(isvc_name),
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": f"{isvc_name}-rollout",
                "namespace": NAMESPACE,
                "annotations": {"mlops-rollout/version": "3"},
            },
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": LEASE_SECONDS,
                "acquireTime": micro_time(renewed),
                "renewTime": micro_time(renewed),
            },
        },
    )


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lock_for(fake_api: FakeApiServer, kubeconfig: Path) -> Any:
    def make(identity: str, clock: Clock) -> RolloutLock:
        kube = connect(KubeSettings("model", NAMESPACE, str(kubeconfig)))
        return RolloutLock(kube.leases(), "model", identity=identity, clock=clock)

    return make


def test_the_second_taker_is_refused_while_the_first_holds_it(
    fake_api: FakeApiServer, lock_for: Any
) -> None:
    clock = Clock()
    first, second = lock_for("a:1:x", clock), lock_for("b:2:y", clock)
    first.acquire("2")
    with pytest.raises(RefusedError, match=r"another `auto` of version 2 holds Lease mlops/model"):
        second.acquire("3")
    assert fake_api.get(lease_path("model"))["spec"]["holderIdentity"] == "a:1:x"
    first.release()
    assert lease_path("model") not in fake_api.objects
    second.acquire("3")  # free again
    assert fake_api.get(lease_path("model"))["spec"]["holderIdentity"] == "b:2:y"


def test_renewal_moves_renew_time_and_a_takeover_is_noticed(
    fake_api: FakeApiServer, lock_for: Any
) -> None:
    clock = Clock()
    lock = lock_for("a:1:x", clock)
    lock.acquire("2")
    first = fake_api.get(lease_path("model"))
    lock.renew_if_due("2")  # not due yet: nothing sent
    assert fake_api.calls("leases") == ["POST"]
    clock.now += RENEW_EVERY_SECONDS + 1
    lock.renew_if_due("2")
    renewed = fake_api.get(lease_path("model"))
    assert fake_api.calls("leases") == ["POST", "PUT"]
    assert renewed["spec"]["renewTime"] > first["spec"]["renewTime"]
    assert renewed["spec"]["acquireTime"] == first["spec"]["acquireTime"]
    assert renewed["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    # Someone decided we were dead and took the lease over: we must stop, not act.
    put_lease(fake_api, "model", "b:2:y", clock.now)
    clock.now += RENEW_EVERY_SECONDS + 1
    with pytest.raises(LockLostError, match="now held by b:2:y"):
        lock.renew_if_due("2")
    lock.release()  # not ours any more: left alone
    assert fake_api.get(lease_path("model"))["spec"]["holderIdentity"] == "b:2:y"


def test_an_expired_lease_is_taken_over_with_a_precondition(
    fake_api: FakeApiServer, lock_for: Any
) -> None:
    clock = Clock()
    put_lease(fake_api, "model", "dead:9:z", clock.now - LEASE_SECONDS - 5)
    stale = fake_api.get(lease_path("model"))["metadata"]["resourceVersion"]
    lock = lock_for("a:1:x", clock)
    lock.acquire("2")
    assert fake_api.calls("leases") == ["POST", "GET", "PUT"]
    assert fake_api.requests[-1].body["metadata"]["resourceVersion"] == stale
    assert fake_api.get(lease_path("model"))["spec"]["holderIdentity"] == "a:1:x"


def test_auto_refuses_while_another_auto_holds_the_lock(
    fake_api: FakeApiServer,
    registry_model: RegistryModel,
    kubeconfig: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    name = registry_model.name
    fake_api.put(isvc_path(name), inference_service(name, NAMESPACE, f"models:/{name}/1"))
    put_lease(fake_api, name, "ci-runner:4242:abcd1234", time.time() - 10)
    code = main(
        ["auto", "--model-name", name, "--tracking-uri", registry_model.tracking_uri,
         "--kubeconfig", str(kubeconfig), "--isvc", name, *AUTO_FAST]
    )  # fmt: skip
    assert code == 2
    assert fake_api.calls() == []  # refused before reading or touching the InferenceService
    assert "another `auto` of version 3 holds Lease" in caplog.text
    assert "ci-runner:4242:abcd1234" in caplog.text
    assert fake_api.get(lease_path(name))["spec"]["holderIdentity"] == "ci-runner:4242:abcd1234"


def test_two_auto_processes_at_once_one_acts_the_other_refuses(
    fake_api: FakeApiServer, registry_model: RegistryModel, kubeconfig: Path, tmp_path: Path
) -> None:
    name = registry_model.name
    fake_api.put(isvc_path(name), inference_service(name, NAMESPACE, f"models:/{name}/1"))
    with CannedPrometheus({"1": HEALTHY, "2": QUIET}).running() as prometheus:
        command = [
            sys.executable, "-m", "rollout", "auto", "--model-name", name,
            "--tracking-uri", registry_model.tracking_uri, "--kubeconfig", str(kubeconfig),
            "--isvc", name, "--prometheus-url", prometheus.url, *AUTO_FAST,
        ]  # fmt: skip
        env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
        logs = [tmp_path / f"auto-{i}.log" for i in (1, 2)]
        with ExitStack() as stack:
            processes = [
                subprocess.Popen(
                    command,
                    stdout=stack.enter_context(log.open("wb")),
                    stderr=subprocess.STDOUT,
                    cwd=REPO_ROOT,
                    env=env,
                )
                for log in logs
            ]
            try:
                codes = [p.wait(120) for p in processes]
            finally:
                for p in processes:
                    if p.poll() is None:
                        p.kill()
                        p.wait(5)
    texts = [log.read_text() for log in logs]
    # The one holding the lock ran the canary (inconclusive to its timeout: rolled back).
    assert sorted(codes) == [1, 2], texts
    winner, loser = (texts[0], texts[1]) if codes[0] == 1 else (texts[1], texts[0])
    assert '"outcome":"rolled_back"' in winner
    assert "another `auto` of version challenger holds" in loser
    predictor = [r.body["spec"]["predictor"] for r in fake_api.patches()]
    # One canary and one rollback (0 %, the stable spec back, then the field removed once
    # the restored revision is Ready): never both acting.
    percents = [p.get("canaryTrafficPercent", "absent") for p in predictor]
    assert percents == [10, 0, "absent", None]
    assert fake_api.calls("leases").count("POST") == 2
    assert lease_path(name) not in fake_api.objects  # released at the end


def test_auto_renews_the_lease_while_it_waits(
    fake_api: FakeApiServer,
    registry_model: RegistryModel,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setattr("rollout.commands.RENEW_EVERY_SECONDS", 0.05)
    monkeypatch.setattr("rollout.lock.RENEW_EVERY_SECONDS", 0.05)
    name = registry_model.name
    fake_api.put(isvc_path(name), inference_service(name, NAMESPACE, f"models:/{name}/1"))
    with CannedPrometheus({"1": HEALTHY, "2": QUIET}).running() as prometheus:
        code = main(
            ["auto", "--model-name", name, "--tracking-uri", registry_model.tracking_uri,
             "--kubeconfig", str(kubeconfig), "--isvc", name, "--prometheus-url", prometheus.url,
             "--soak", "0.3", "--interval", "0.2", "--step-timeout", "1"]
        )  # fmt: skip
    assert code == 1  # inconclusive to the step's timeout: rolled back
    calls = fake_api.calls("leases")
    assert calls[0] == "POST" and calls[-1] == "DELETE"
    assert calls.count("PUT") >= 3, calls  # renewed while soaking and between analyses
    renewals = [r for r in fake_api.requests if r.method == "PUT"]
    times = [r.body["spec"]["renewTime"] for r in renewals]
    assert times == sorted(times) and len(set(times)) == len(times)
