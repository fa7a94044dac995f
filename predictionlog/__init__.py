"""The prediction log: a small HTTP sink for KServe's payload logger.

KServe's agent sidecar (`spec.predictor.logger`) posts each inference request and its
response as two binary-mode CloudEvents with the same `ce-id`; this service stores the
pair as one row of PostgreSQL and serves the history back (`GET /predictions`).
`python -m predictionlog` runs it; docs/prediction-log.md describes it.
"""
