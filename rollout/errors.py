"""One base exception; each kind carries the exit code `python -m rollout` returns."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of every subcommand (docs/rollouts.md, "Exit codes")."""

    OK = 0
    """Command done; `analyze` passed; `auto` promoted."""
    FAILED = 1
    """`analyze` failed a check; `auto` rolled the canary back."""
    USAGE = 2
    """Bad flags or configuration, or the command was refused (nothing was changed)."""
    INCONCLUSIVE = 3
    """`analyze`: too little traffic (or data) to judge."""
    UNREACHABLE = 4
    """Kubernetes API, MLflow or Prometheus unreachable or answering an error."""
    ROLLBACK_FAILED = 5
    """`auto` could not roll back: the canary may still take traffic; act by hand."""


class RolloutError(Exception):
    """Base of every error the rollout tool reports to its user."""

    exit_code: ExitCode = ExitCode.USAGE


class ConfigError(RolloutError):
    """Flags, settings or the InferenceService's shape are not what the tool needs."""

    exit_code = ExitCode.USAGE


class RefusedError(RolloutError):
    """The command would do something unsafe or pointless; nothing was changed."""

    exit_code = ExitCode.USAGE


class UnreachableError(RolloutError):
    """An outside system (Kubernetes API, MLflow, Prometheus) failed to answer properly."""

    exit_code = ExitCode.UNREACHABLE


class ConflictError(UnreachableError):
    """The InferenceService changed between our read and our patch (HTTP 409)."""


class RollbackFailedError(RolloutError):
    """Rolling back failed: the canary may still take traffic."""

    exit_code = ExitCode.ROLLBACK_FAILED


class LockLostError(UnreachableError):
    """Another run took over the rollout lock (rollout/lock.py): it owns the canary now, so
    this run stops without touching it (a rollback from here would fight the new holder)."""
