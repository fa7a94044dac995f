"""What the commands print: a table for people, then one JSON line for scripts."""

from __future__ import annotations

import json
from typing import Any

from rollout.analysis import Analysis, Check, VersionStats
from rollout.state import RolloutState


def _number(value: float | None, name: str) -> str:
    if value is None:
        return "-"
    if name == "requests":
        return f"{value:.0f}"
    if name == "p99_latency":
        return f"{value * 1000:.1f} ms"
    return f"{value:.4f}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _stats_json(stats: VersionStats) -> dict[str, Any]:
    return {
        "version": stats.version,
        "requests": {k: _round(v) for k, v in sorted(stats.outcomes.items())},
        "success_ratio": _round(stats.success_ratio),
        "p99_seconds": _round(stats.p99_seconds),
        "classes": {k: _round(v) for k, v in sorted(stats.classes.items())},
        "input_psi": {k: _round(v) for k, v in sorted(stats.input_psi.items())},
    }


def _check_json(check: Check) -> dict[str, Any]:
    return {
        "status": check.status.value,
        "stable": _round(check.stable),
        "canary": _round(check.canary),
        "limit": _round(check.limit),
        "rule": check.rule,
        "detail": check.detail,
    }


def _top(stats: VersionStats) -> str:
    top = stats.top_input_psi
    return "-" if top is None else f"{top[1]:.3f} {top[0]}"


def analysis_json(analysis: Analysis, model_name: str, window: str) -> dict[str, Any]:
    return {
        "verdict": analysis.verdict.value,
        "model_name": model_name,
        "stable_version": analysis.stable.version,
        "canary_version": analysis.canary.version,
        "window": window,
        "reason": analysis.reason,
        "input_drift": analysis.input_drift,
        "checks": {c.name: _check_json(c) for c in analysis.checks},
        "stable": _stats_json(analysis.stable),
        "canary": _stats_json(analysis.canary),
    }


def analysis_table(analysis: Analysis, model_name: str, window: str) -> str:
    head = (
        f"canary analysis of {model_name}: stable v{analysis.stable.version} vs "
        f"canary v{analysis.canary.version}, window {window}"
    )
    rows = [("check", "stable", "canary", "threshold", "result")]
    rows += [
        (
            c.name,
            _number(c.stable, c.name),
            _number(c.canary, c.name),
            c.rule,
            c.status.value.upper(),
        )
        for c in analysis.checks
    ]
    rows.append(("input_psi (top)", _top(analysis.stable), _top(analysis.canary), "", "INFO"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [head]
    lines += [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines += [f"  {c.name}: {c.detail}" for c in analysis.checks]
    lines.append(f"  input_drift: {analysis.input_drift}")
    lines.append(f"verdict: {analysis.verdict.value.upper()} ({analysis.reason})")
    return "\n".join(lines)


def json_line(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=False, separators=(",", ":"))


def status_text(state: RolloutState) -> str:
    i = state.isvc
    lines = [
        f"InferenceService {i.namespace}/{i.name}  ready={i.ready}",
        f"  spec MODEL_URI        {i.model_uri}  (version {state.spec_version})",
        f"  canaryTrafficPercent  {'-' if i.canary_percent is None else i.canary_percent}",
        f"  stable                version {state.stable_version or '-'} (@champion), "
        f"revision {i.latest_rolledout_revision or '-'}",
    ]
    if state.canary_running:
        lines.append(
            f"  canary                version {state.canary_version} at {i.canary_percent} %, "
            f"revision {i.latest_ready_revision or '(not ready yet)'}"
        )
    elif state.rolled_back:
        lines.append("  canary                none (the last one was rolled back; 0 % pinned)")
    elif state.pending_promotion:
        lines.append(
            f"  canary                version {state.spec_version} takes 100 % but @champion "
            f"is {state.stable_version}: run `promote` to finish"
        )
    else:
        lines.append("  canary                none")
    for target in i.traffic:
        flags = ", ".join(f for f in ("latest" if target.latest else "", target.tag or "") if f)
        lines.append(
            f"  traffic               {target.percent if target.percent is not None else '-'} % "
            f"-> {target.revision or '-'}{f' ({flags})' if flags else ''}"
        )
    aliases = ", ".join(f"@{k}={v}" for k, v in sorted(state.aliases.items())) or "none"
    lines.append(f"registry aliases        {aliases}")
    return "\n".join(lines)


def lock_text(lock: dict[str, Any] | None) -> str:
    """One line on the `auto` lock (rollout/lock.py) for `status`."""
    if lock is None:
        return "free (no auto runs on it)"
    if "unknown" in lock:
        return f"unknown ({lock['unknown']})"
    state = "expired, taken over by the next auto" if lock["expired"] else "held"
    return (
        f"{state}: {lock['holder']} rolling out {lock['version'] or '?'}, renewed "
        f"{lock['renewed_seconds_ago']}s ago ({lock['lease']})"
    )
