"""The contract between training, serving and the rollout.

What one component writes and another reads, one module per concern: `model_format`
(how a model is written and what the predictor trusts) with `tree_check` (tree arrays
validated on load) and `onnx_format` (the ONNX copy and its runner); `uris` (`models:/`
URIs and aliases); `registry_tags` (tag names on versions and runs); `mlflow_client`
(MLflow's error codes and one client configuration); `metric_names` (metric and label
names); `flags` (both spellings of every flag); `local_cluster` (the local stand-in for
the Kubernetes API the rollout and the demo share) with `merge_patch` (RFC 7386, written
once). `upstream` lists every deviation from an upstream library's behaviour. It imports
none of the three components, so each of them can depend on it and never on another's
internals (docs/design.md, "The contract").
"""
