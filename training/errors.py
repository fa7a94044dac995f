"""The training Job's failures, each with the exit code docs/design.md fixes for it
("Training Job contract")."""

from __future__ import annotations


class TrainingError(Exception):
    """Base of every failure the Job reports; anything else exits 1."""

    exit_code = 1


class ConfigError(TrainingError):
    """The settings or the data cannot work (unknown dataset, missing column, ...)."""

    exit_code = 2


class RegistryUnavailable(TrainingError):
    """MLflow did not answer within the deadline."""

    exit_code = 4
