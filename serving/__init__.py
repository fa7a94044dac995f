"""Serve a registered scikit-learn model over the V2 (Open Inference) protocol.

`python -m serving` runs a KServe model server whose model is loaded by registry URI
(`models:/NAME/VERSION` or `models:/NAME@ALIAS`); `rollout` moves it behind a
canary. The modules read in the order a request flows: settings → registry → loader →
metadata → codec → model → rest / grpc_service → server.
"""
