"""The tags on a registered model version and on a training run: who writes each, who
reads it (docs/design.md, "The contract").

Training writes the data's identity, the chosen family and the gates' verdict on every
version it registers; the rollout writes its own verdict, and refuses a version either
verdict rejected (unless told `--allow-rejected`).
"""

from __future__ import annotations

# --- written by training on every version -------------------------------------------------
DATA_SHA256 = "data_sha256"
DATASET = "dataset"
CANDIDATE = "candidate"
GATE_STATUS = "gate_status"
"""`passed` once the version's aliases moved, `rejected` when a gate failed; a version
whose registration did not finish has neither (`pending`)."""
GATE_PASSED = "passed"
GATE_REJECTED = "rejected"
GATE_PENDING = "pending"
REJECTION_REASON = "rejection_reason"
SERVING_RUNTIME = "serving_runtime"
"""The runtime the predictor may serve the version with: `onnx` (its ONNX copy passed
parity) or `sklearn` (contract/onnx_format.py)."""
ONNX_PARITY = "onnx_parity"
"""`passed`, `failed`, or why there is no copy to check."""
ONNX_PARITY_DETAIL = "onnx_parity_detail"
"""The parity figures, or why the copy is not served."""

# --- written by training on its MLflow run --------------------------------------------------
MODEL_NAME = "model_name"
REGISTERED_VERSION = "registered_version"
ATTEMPT_KEY = "attempt_key"
"""What makes a retried Job recognise its own earlier attempt (training/registry.py)."""

# --- written by the rollout on the version it judged ----------------------------------------
ROLLOUT_STATUS = "rollout_status"
ROLLOUT_REASON = "rollout_reason"
ROLLOUT_TIME = "rollout_time"
ROLLOUT_DECISION = "rollout_decision"
"""The rollout controller's latest decision on the version (started, stepped, refused...)."""
PROMOTED = "promoted"
ROLLED_BACK = "rejected"
"""The rollout's value for a version it rolled back (the same word as the gates')."""

VALUE_LIMIT = 5000
"""Free-text tag values (reasons) are cut to this many characters: MLflow 2 refused longer
model-version tags, and MLflow 3 (`MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH`, 100,000) still
keeps them in the registry's listing answers."""
