"""The local cluster (contract/local_cluster.py): the API server's semantics the rollout
relies on, over a folder of JSON files shared by separate processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from contract.local_cluster import (
    INFERENCE_SERVICES,
    LEASES,
    AlreadyExists,
    Conflict,
    Invalid,
    LocalCluster,
    NotFound,
)
from tests.support import REPO_ROOT


def isvc(name: str = "demo", uri: str = "models:/m/1") -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": "mlops"},
        "spec": {
            "predictor": {
                "containers": [
                    {"name": "kserve-container", "env": [{"name": "MODEL_URI", "value": uri}]}
                ]
            }
        },
    }


def lease(name: str = "demo-rollout", holder: str = "a") -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"holderIdentity": holder}}


@pytest.fixture
def cluster(tmp_path: Path) -> LocalCluster:
    return LocalCluster(tmp_path / "cluster")


def test_create_stores_the_object_with_server_fields(cluster: LocalCluster) -> None:
    created = cluster.create(INFERENCE_SERVICES, isvc())

    metadata = created["metadata"]
    assert metadata["resourceVersion"] == "1"
    assert metadata["generation"] == 1
    assert metadata["uid"] and metadata["creationTimestamp"].endswith("Z")
    path = cluster.folder / "inferenceservices" / "demo.json"
    assert json.loads(path.read_text()) == created == cluster.get(INFERENCE_SERVICES, "demo")
    with pytest.raises(AlreadyExists, match="inferenceservices/demo already exists"):
        cluster.create(INFERENCE_SERVICES, isvc())


def test_one_counter_for_the_whole_folder(cluster: LocalCluster) -> None:
    first = cluster.create(INFERENCE_SERVICES, isvc())
    second = cluster.create(LEASES, lease())
    patched = cluster.merge_patch(INFERENCE_SERVICES, "demo", {"metadata": {"labels": {"a": "b"}}})
    status = cluster.update_status(LEASES, "demo-rollout", {"observed": True})

    versions = [o["metadata"]["resourceVersion"] for o in (first, second, patched, status)]
    assert versions == ["1", "2", "3", "4"]
    assert cluster.revision() == 4
    cluster.delete(LEASES, "demo-rollout")
    assert cluster.revision() == 5
    assert cluster.create(LEASES, lease())["metadata"]["resourceVersion"] == "6"


def test_a_no_op_write_keeps_the_resource_version_and_the_counter(cluster: LocalCluster) -> None:
    created = cluster.create(INFERENCE_SERVICES, isvc())
    rv = created["metadata"]["resourceVersion"]
    same_uri = {"spec": {"predictor": {"containers": created["spec"]["predictor"]["containers"]}}}

    assert cluster.merge_patch(INFERENCE_SERVICES, "demo", same_uri) == created
    assert (
        cluster.merge_patch(INFERENCE_SERVICES, "demo", {"metadata": {"resourceVersion": rv}})
        == created
    )
    assert cluster.replace(INFERENCE_SERVICES, "demo", created) == created
    status = cluster.update_status(INFERENCE_SERVICES, "demo", {"url": "http://x"})
    assert cluster.update_status(INFERENCE_SERVICES, "demo", {"url": "http://x"}) == status
    assert cluster.revision() == 2


def test_generation_counts_spec_changes_only(cluster: LocalCluster) -> None:
    cluster.create(INFERENCE_SERVICES, isvc())

    labelled = cluster.merge_patch(INFERENCE_SERVICES, "demo", {"metadata": {"labels": {"x": "y"}}})
    assert labelled["metadata"]["generation"] == 1
    status = cluster.update_status(INFERENCE_SERVICES, "demo", {"conditions": []})
    assert status["metadata"]["generation"] == 1
    canary = cluster.merge_patch(
        INFERENCE_SERVICES, "demo", {"spec": {"predictor": {"canaryTrafficPercent": 10}}}
    )
    assert canary["metadata"]["generation"] == 2
    assert canary["status"] == {"conditions": []}  # a spec patch keeps the status
    promoted = cluster.merge_patch(
        INFERENCE_SERVICES, "demo", {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    )
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert promoted["metadata"]["generation"] == 3
    # As the CRD strategy counts it: anything but metadata and status.
    extra = cluster.replace(INFERENCE_SERVICES, "demo", {**promoted, "extra": {"a": 1}})
    assert extra["metadata"]["generation"] == 4


def test_a_stale_resource_version_is_a_conflict_and_stores_nothing(cluster: LocalCluster) -> None:
    read = cluster.create(INFERENCE_SERVICES, isvc())
    cluster.update_status(INFERENCE_SERVICES, "demo", {"url": "http://moved"})
    stale = read["metadata"]["resourceVersion"]
    before = cluster.get(INFERENCE_SERVICES, "demo")

    with pytest.raises(
        Conflict, match="resourceVersion 1 was asked for, the stored object is at 2"
    ):
        cluster.merge_patch(
            INFERENCE_SERVICES,
            "demo",
            {
                "metadata": {"resourceVersion": stale},
                "spec": {"predictor": {"canaryTrafficPercent": 5}},
            },
        )
    with pytest.raises(Conflict):
        cluster.replace(INFERENCE_SERVICES, "demo", read)
    with pytest.raises(Conflict):
        cluster.delete(INFERENCE_SERVICES, "demo", resource_version=stale)
    with pytest.raises(Conflict):
        cluster.update_status(INFERENCE_SERVICES, "demo", {}, resource_version=stale)
    assert cluster.get(INFERENCE_SERVICES, "demo") == before
    assert cluster.revision() == 2


def test_a_dry_run_answers_the_would_be_object_and_stores_nothing(cluster: LocalCluster) -> None:
    assert cluster.create(INFERENCE_SERVICES, isvc(), dry_run=True)["metadata"]["generation"] == 1
    assert not (cluster.folder / "inferenceservices" / "demo.json").exists()
    created = cluster.create(INFERENCE_SERVICES, isvc())
    patch = {"spec": {"predictor": {"canaryTrafficPercent": 10}}}

    would_be = cluster.merge_patch(INFERENCE_SERVICES, "demo", patch, dry_run=True)
    assert would_be["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert would_be["metadata"]["generation"] == 2
    changed = {**created, "spec": {"predictor": {"containers": []}}}
    assert (
        cluster.replace(INFERENCE_SERVICES, "demo", changed, dry_run=True)["spec"]
        == changed["spec"]
    )
    assert cluster.get(INFERENCE_SERVICES, "demo") == created
    assert cluster.revision() == 1
    with pytest.raises(Conflict):  # a dry run checks what the write would check
        cluster.merge_patch(
            INFERENCE_SERVICES, "demo", {"metadata": {"resourceVersion": "9"}}, dry_run=True
        )


def test_status_is_a_subresource(cluster: LocalCluster) -> None:
    created = cluster.create(INFERENCE_SERVICES, {**isvc(), "status": {"url": "ignored"}})
    assert "status" not in created
    with pytest.raises(Invalid, match="update_status"):
        cluster.merge_patch(INFERENCE_SERVICES, "demo", {"status": {"url": "http://x"}})
    with_status = cluster.update_status(INFERENCE_SERVICES, "demo", {"url": "http://kept"})

    replaced = cluster.replace(
        INFERENCE_SERVICES, "demo", {**with_status, "status": {"url": "lost"}}
    )
    assert replaced["status"] == {"url": "http://kept"}


def test_missing_objects_and_bad_names_are_clear_errors(cluster: LocalCluster) -> None:
    with pytest.raises(NotFound, match=r"inferenceservices/demo not found in .*cluster"):
        cluster.get(INFERENCE_SERVICES, "demo")
    assert not cluster.folder.exists()  # a read creates nothing
    with pytest.raises(NotFound):
        cluster.merge_patch(INFERENCE_SERVICES, "demo", {})
    with pytest.raises(NotFound):
        cluster.delete(LEASES, "demo")
    with pytest.raises(Invalid, match="DNS-1123"):
        cluster.get(INFERENCE_SERVICES, "../etc")
    with pytest.raises(Invalid, match="resourceVersion must not be set"):
        cluster.create(LEASES, {"metadata": {"name": "x", "resourceVersion": "3"}})
    cluster.create(LEASES, lease())
    with pytest.raises(Invalid, match="uid is set by the server"):
        cluster.merge_patch(LEASES, "demo-rollout", {"metadata": {"uid": "other"}})
    with pytest.raises(Invalid, match=r"needs metadata\.resourceVersion"):
        cluster.replace(LEASES, "demo-rollout", lease())


def test_events_are_appended_one_json_object_a_line(cluster: LocalCluster) -> None:
    cluster.create(INFERENCE_SERVICES, isvc())
    cluster.post_event(
        {"metadata": {"generateName": "demo."}, "reason": "Started", "type": "Normal"}
    )
    cluster.post_event(
        {"metadata": {"generateName": "demo."}, "reason": "Promoted", "type": "Normal"}
    )

    events = cluster.events()
    assert [e["reason"] for e in events] == ["Started", "Promoted"]
    assert events[0]["metadata"]["name"].startswith("demo.")
    assert events[0]["metadata"]["name"] != events[1]["metadata"]["name"]
    assert [e["metadata"]["resourceVersion"] for e in events] == ["2", "3"]
    lines = (cluster.folder / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["reason"] for line in lines] == ["Started", "Promoted"]


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from contract.local_cluster import Conflict, LocalCluster

    cluster = LocalCluster(Path(sys.argv[1]))
    me, rounds = sys.argv[2], int(sys.argv[3])
    done = 0
    while done < rounds:
        obj = cluster.get("leases", "contended")
        spec = obj["spec"]
        patch = {
            "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
            "spec": {"count": spec["count"] + 1, me: spec.get(me, 0) + 1},
        }
        try:
            cluster.merge_patch("leases", "contended", patch)
        except Conflict:
            continue  # someone wrote in between: read again, as a client does
        cluster.post_event({"metadata": {"generateName": me + "."}, "reason": "Counted"})
        done += 1
    """
)


def test_two_processes_writing_at_once_lose_no_update(cluster: LocalCluster) -> None:
    cluster.create(LEASES, {"metadata": {"name": "contended"}, "spec": {"count": 0}})
    rounds = 60
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(cluster.folder), who, str(rounds)], cwd=REPO_ROOT
        )
        for who in ("a", "b")
    ]
    for writer in writers:
        assert writer.wait(timeout=120) == 0

    spec = cluster.get(LEASES, "contended")["spec"]
    assert spec == {"count": 2 * rounds, "a": rounds, "b": rounds}
    assert len(cluster.events()) == 2 * rounds
    # Every change took its own revision: 1 create, then one patch and one event a round.
    assert cluster.revision() == 1 + 2 * 2 * rounds
    leftovers = [p.name for p in cluster.folder.rglob("*.tmp")]
    assert leftovers == []
