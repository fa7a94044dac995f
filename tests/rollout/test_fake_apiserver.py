"""The recording fake API server behaves like kube-apiserver where the rollout relies on it
(resourceVersion from one revision counter, kept on a no-op write; dryRun=All stores
nothing; create, replace and delete preconditions; RBAC answers before a dry run)."""

from __future__ import annotations

from typing import Any

import requests

from tests.rollout.fake_apiserver import FakeApiServer, inference_service
from tests.rollout.helpers import NAMESPACE, isvc_path

MERGE = {"Content-Type": "application/merge-patch+json"}
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"


def patch(fake: FakeApiServer, path: str, body: dict[str, Any], query: str = "") -> Any:
    return requests.patch(f"{fake.url}{path}{query}", json=body, headers=MERGE, timeout=10)


def test_resource_versions_come_from_one_counter_and_a_no_op_keeps_them(
    fake_api: FakeApiServer,
) -> None:
    path = isvc_path("m")
    fake_api.put(path, inference_service("m", NAMESPACE, "models:/m/1"))  # rv 1000
    lease = requests.post(
        f"{fake_api.url}{LEASES}", json={"metadata": {"name": "m-rollout"}}, timeout=10
    )
    assert lease.status_code == 201
    assert lease.json()["metadata"]["resourceVersion"] == "1001"
    changed = patch(fake_api, path, {"spec": {"predictor": {"minReplicas": 2}}})
    assert changed.json()["metadata"]["resourceVersion"] == "1002"  # not 1001: global
    assert changed.json()["metadata"]["generation"] == 4
    same = patch(fake_api, path, {"spec": {"predictor": {"minReplicas": 2}}})
    assert same.status_code == 200
    assert same.json()["metadata"]["resourceVersion"] == "1002"  # a no-op writes nothing
    assert fake_api.revision == 1002
    stale = patch(fake_api, path, {"metadata": {"resourceVersion": "1000"}, "spec": {}})
    assert stale.status_code == 409


def test_a_dry_run_answers_the_would_be_object_and_stores_nothing(
    fake_api: FakeApiServer,
) -> None:
    path = isvc_path("m")
    fake_api.put(path, inference_service("m", NAMESPACE, "models:/m/1"))
    before = fake_api.get(path)
    answer = patch(fake_api, path, {"spec": {"predictor": {"minReplicas": 5}}}, "?dryRun=All")
    assert answer.status_code == 200
    assert answer.json()["spec"]["predictor"]["minReplicas"] == 5
    assert answer.json()["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert fake_api.get(path) == before and fake_api.revision == 1000
    assert patch(fake_api, path, {}, "?dryRun=Some").status_code == 400


def test_rbac_answers_403_before_the_dry_run(fake_api: FakeApiServer) -> None:
    path = isvc_path("m")
    fake_api.put(path, inference_service("m", NAMESPACE, "models:/m/1"))
    fake_api.forbidden_verbs = {"patch"}
    answer = patch(fake_api, path, {"spec": {}}, "?dryRun=All")
    assert answer.status_code == 403
    assert answer.json()["reason"] == "Forbidden"
    assert requests.get(f"{fake_api.url}{path}", timeout=10).status_code == 200


def test_create_twice_is_409_and_delete_honours_its_precondition(
    fake_api: FakeApiServer,
) -> None:
    body = {"metadata": {"name": "m-rollout"}, "spec": {"holderIdentity": "a"}}
    first = requests.post(f"{fake_api.url}{LEASES}", json=body, timeout=10)
    second = requests.post(f"{fake_api.url}{LEASES}", json=body, timeout=10)
    assert (first.status_code, second.status_code) == (201, 409)
    assert second.json()["reason"] == "AlreadyExists"
    url = f"{fake_api.url}{LEASES}/m-rollout"
    stale = {"preconditions": {"resourceVersion": "1"}}
    assert requests.delete(url, json=stale, timeout=10).status_code == 409
    replaced = requests.put(
        url, json={**body, "metadata": {"name": "m-rollout", "resourceVersion": "1"}}, timeout=10
    )
    assert replaced.status_code == 409
    current = first.json()["metadata"]["resourceVersion"]
    fresh = {"preconditions": {"resourceVersion": current}}
    assert requests.delete(url, json=fresh, timeout=10).status_code == 200
    assert requests.get(url, timeout=10).status_code == 404
