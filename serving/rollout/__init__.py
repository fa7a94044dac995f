"""Deprecated: the rollout is its own component now, `python -m rollout`.

`python -m serving.rollout` keeps working for one release, with a warning.
"""
