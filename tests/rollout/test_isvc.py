from __future__ import annotations

import copy
import json

import pytest

from rollout import isvc
from tests.rollout.fake_apiserver import inference_service, rfc7386


def canary_isvc() -> dict[str, object]:
    return inference_service(
        "breast-cancer", "mlops", "models:/breast-cancer/4", 10, latest_revision="00002"
    )


def test_parse_reads_spec_and_status() -> None:
    state = isvc.parse(canary_isvc())
    assert state == isvc.IsvcState(
        namespace="mlops",
        name="breast-cancer",
        resource_version="1000",
        model_uri="models:/breast-cancer/4",
        canary_percent=10,
        latest_ready_revision="breast-cancer-predictor-00002",
        latest_rolledout_revision="breast-cancer-predictor-00001",
        previous_rolledout_revision=None,
        traffic=(
            isvc.TrafficTarget("breast-cancer-predictor-00002", 10, True, None),
            isvc.TrafficTarget("breast-cancer-predictor-00001", 90, False, "prev"),
        ),
        ready=True,
        latest_created_revision="breast-cancer-predictor-00002",
    )


def test_start_patch_carries_the_whole_containers_list_with_only_model_uri_changed() -> None:
    obj = inference_service("breast-cancer", "mlops", "models:/breast-cancer/3")
    before = copy.deepcopy(obj)
    patch = isvc.start_patch(obj, "models:/breast-cancer/4", 10)
    expected_containers = copy.deepcopy(before["spec"]["predictor"]["containers"])  # type: ignore[index]
    expected_containers[0]["env"][2]["value"] = "models:/breast-cancer/4"
    assert patch == {
        "metadata": {"resourceVersion": "1000"},
        "spec": {"predictor": {"canaryTrafficPercent": 10, "containers": expected_containers}},
    }
    assert obj == before  # the object read is not modified


def test_merge_patch_semantics_keep_every_other_field() -> None:
    obj = inference_service("breast-cancer", "mlops", "models:/breast-cancer/3")
    patched = rfc7386(obj, isvc.start_patch(obj, "models:/breast-cancer/4", 10))
    container = patched["spec"]["predictor"]["containers"][0]
    assert container["env"] == [
        {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"},
        {"name": "MODEL_NAME", "value": "breast-cancer"},
        {"name": "MODEL_URI", "value": "models:/breast-cancer/4"},
    ]
    assert container["ports"] == obj["spec"]["predictor"]["containers"][0]["ports"]  # type: ignore[index]
    assert patched["spec"]["predictor"]["minReplicas"] == 1
    assert patched["metadata"]["annotations"] == obj["metadata"]["annotations"]  # type: ignore[index]


def test_promote_patch_deletes_the_percent_with_a_json_null() -> None:
    body = isvc.promote_patch(canary_isvc())
    assert body == {
        "metadata": {"resourceVersion": "1000"},
        "spec": {"predictor": {"canaryTrafficPercent": None}},
    }
    assert '"canaryTrafficPercent": null' in json.dumps(body)
    assert "canaryTrafficPercent" not in rfc7386(canary_isvc(), body)["spec"]["predictor"]


def test_traffic_and_restore_patches() -> None:
    obj = canary_isvc()
    assert isvc.traffic_patch(obj, 0) == {
        "metadata": {"resourceVersion": "1000"},
        "spec": {"predictor": {"canaryTrafficPercent": 0}},
    }
    restore = isvc.restore_patch(obj, "models:/breast-cancer/3")
    assert set(restore["spec"]["predictor"]) == {"containers"}
    env = restore["spec"]["predictor"]["containers"][0]["env"]
    assert {"name": "MODEL_URI", "value": "models:/breast-cancer/3"} in env


def test_our_merge_patch_matches_the_rfc_transcription() -> None:
    obj = canary_isvc()
    for body in (
        isvc.promote_patch(obj),
        isvc.traffic_patch(obj, 50),
        isvc.start_patch(obj, "models:/breast-cancer/5", 20),
    ):
        assert isvc.merge_patch(obj, body) == rfc7386(obj, body)


@pytest.mark.parametrize("percent", [-1, 101])
def test_percent_out_of_range_is_refused(percent: int) -> None:
    with pytest.raises(ValueError, match="within"):
        isvc.traffic_patch(canary_isvc(), percent)


def test_an_isvc_without_model_uri_is_explained() -> None:
    obj = canary_isvc()
    obj["spec"]["predictor"]["containers"][0]["env"] = [{"name": "X", "value": "1"}]  # type: ignore[index]
    with pytest.raises(isvc.IsvcShapeError, match="no MODEL_URI environment variable"):
        isvc.parse(obj)
    obj["spec"]["predictor"]["containers"] = []  # type: ignore[index]
    with pytest.raises(isvc.IsvcShapeError, match="containers is empty"):
        isvc.parse(obj)
    with pytest.raises(isvc.IsvcShapeError, match=r"no spec\.predictor"):
        isvc.parse({"metadata": {}, "spec": {}})


def test_model_uri_from_value_from_is_refused() -> None:
    obj = canary_isvc()
    obj["spec"]["predictor"]["containers"][0]["env"] = [  # type: ignore[index]
        {"name": "MODEL_URI", "valueFrom": {"configMapKeyRef": {"name": "m", "key": "uri"}}}
    ]
    with pytest.raises(isvc.IsvcShapeError, match="valueFrom"):
        isvc.start_patch(obj, "models:/breast-cancer/5", 10)


def test_the_zero_may_go_only_once_a_revision_other_than_the_canarys_is_ready() -> None:
    obj = canary_isvc()
    component = obj["status"]["components"]["predictor"]
    canary = "breast-cancer-predictor-00002"
    # Restored in the spec, but KServe has not made its revision yet: removing the 0 now
    # would send 100 % to the latest ready revision, the canary's.
    pending = isvc.restored_revision_pending(isvc.parse(obj), canary)
    assert pending is not None and "not created the restored revision" in pending
    component["latestCreatedRevision"] = "breast-cancer-predictor-00003"
    obj["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "RevisionMissing", "message": "pulling"}
    ]
    pending = isvc.restored_revision_pending(isvc.parse(obj), canary)
    assert pending is not None and "00003 is not Ready" in pending and "pulling" in pending
    component["latestReadyRevision"] = "breast-cancer-predictor-00003"
    assert isvc.restored_revision_pending(isvc.parse(obj), canary) is None
    # Without a record of the canary's revision, the route must follow the restored one.
    pending = isvc.restored_revision_pending(isvc.parse(obj), None)
    assert pending is not None and "route" in pending
    component["traffic"][0]["revisionName"] = "breast-cancer-predictor-00003"
    assert isvc.restored_revision_pending(isvc.parse(obj), None) is None
