"""Load tests of the V2 predictor with locust (`loadtest/locustfile.py`).

`v2.py` builds requests and checks responses against the V2 contract (docs/design.md,
"Predictor contract (V2)"); `slo.py` counts answers per model version and judges the
run against its SLOs. Both are plain functions, so they are tested without locust.
"""
