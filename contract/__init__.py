"""The contract between training, serving and the rollout.

What one component writes and another reads: the model format and its trusted types,
`models:/` URIs and aliases, registry tag names and MLflow's error codes, the MLflow
client's configuration, and the metric and label names. It imports none of the three
components, so each of them can depend on it and never on another's internals
(docs/design.md, "The contract").
"""
