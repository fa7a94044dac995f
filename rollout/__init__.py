"""Canary rollouts of an InferenceService that judge themselves.

`python -m rollout` starts a canary (a new registry version behind
`canaryTrafficPercent`), compares it with the stable version on Prometheus
(success ratio, p99 latency, drift of the predicted-class mix), and promotes it
(`@champion` moves) or rolls it back (the version is tagged with the reason).

Importing this package stays light: the Kubernetes and MLflow clients are
imported only by the commands that talk to them, and nothing here imports the
predictor.
"""
