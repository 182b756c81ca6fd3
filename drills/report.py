"""A drill's report: the verdict as JSON, the history as JSON lines, a Markdown summary,
and two plots over time (ride latency; requests and completions per second) with every
fault window shaded and labelled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drills.history import Event, RideOutcome, outcomes

# What every verdict has (drills/engine.py); anything else is the scenario's own finding.
ENGINE_KEYS = frozenset(
    {
        "scenario",
        "valid",
        "rides",
        "completed",
        "cancelled",
        "unfinished",
        "outcomes",
        "violations",
        "stuck",
        "in_flight",
        "recovery_seconds",
        "faults",
        "checks",
        "seconds",
        "rate",
        "seed",
        "latency_seconds",
        "requests_retried",
        "rides_with_client_trace_id",
        "rides_checked_in_databases",
        "report",
    }
)
COLORS = ["#f4c7c3", "#fce8b2", "#c9daf8", "#d9ead3", "#ead1dc"]


def write(verdict: dict[str, Any], target: Path) -> dict[str, Any]:
    target.mkdir(parents=True, exist_ok=True)
    events: list[Event] = verdict.pop("_history", [])
    (target / "history.jsonl").write_text("".join(json.dumps(e.__dict__) + "\n" for e in events))
    rides = outcomes(events)
    series = verdict.pop("_series", {})
    verdict["report"] = {
        "dir": str(target),
        "history": "history.jsonl",
        "summary": "summary.md",
        "plots": [_plot_latency(rides, verdict, series, target), _plot_throughput(rides, verdict, target)],
    }
    (target / "verdict.json").write_text(json.dumps(verdict, indent=2) + "\n")
    (target / "summary.md").write_text(summary(verdict))
    return verdict


def _shade(axis: Any, faults: list[dict[str, Any]], label: bool) -> None:
    for i, fault in enumerate(faults):
        end = fault["end"] if fault["end"] is not None else fault["start"] + 0.2
        name = f"{fault['name']} {fault['target']}"
        if fault["detail"].get("step"):
            name += f" @{fault['detail']['step']}"
        axis.axvspan(fault["start"], max(end, fault["start"] + 0.2), color=COLORS[i % len(COLORS)], alpha=0.9)
        if label:
            axis.annotate(
                name,
                (fault["start"], 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
            )


def _figure(rows: int) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(rows, 1, sharex=True, figsize=(10, 3.2 * rows), squeeze=False)


def _plot_latency(rides: list[RideOutcome], verdict: dict[str, Any], series: dict[str, Any], target: Path) -> str:
    plt, fig, axes = _figure(1 + len(series))
    axis = axes[0][0]
    _shade(axis, verdict["faults"], label=True)
    done = [r for r in rides if r.latency is not None]
    for outcome, color, marker in (("completed", "#1f4e79", "o"), ("other", "#e67e22", "s")):
        chosen = [r for r in done if (r.outcome == "completed") == (outcome == "completed")]
        axis.scatter(
            [r.requested_at for r in chosen],
            [r.latency for r in chosen],
            s=12,
            c=color,
            marker=marker,
            label="completed" if outcome == "completed" else "cancelled",
        )
    unfinished = [r for r in rides if r.latency is None]
    if unfinished:
        top = max((r.latency or 0 for r in done), default=1.0)
        axis.scatter([r.requested_at for r in unfinished], [top] * len(unfinished), c="#c0392b", marker="x")
    axis.set_ylabel("ride latency (s), request to end")
    axis.set_title(f"{verdict['scenario']}: {'VALID' if verdict['valid'] else 'INVALID'}, by request time")
    axis.legend(loc="upper right", fontsize=8)
    for row, (name, found) in enumerate(series.items(), start=1):
        extra = axes[row][0]
        _shade(extra, verdict["faults"], label=False)
        points = found["points"]
        extra.step([t for t, _ in points], [v for _, v in points], where="post", color="#1f4e79")
        if found.get("ticks"):
            extra.set_yticks(list(range(len(found["ticks"]))), found["ticks"])
        extra.set_ylabel(name)
    axes[-1][0].set_xlabel("seconds since the drill started")
    fig.tight_layout()
    fig.savefig(target / "latency.png", dpi=80)
    plt.close(fig)
    return "latency.png"


def _plot_throughput(rides: list[RideOutcome], verdict: dict[str, Any], target: Path) -> str:
    plt, fig, axes = _figure(1)
    axis = axes[0][0]
    _shade(axis, verdict["faults"], label=True)
    end = int(max([verdict["seconds"], *(r.ended_at or 0 for r in rides)])) + 1
    seconds = list(range(end))
    requested = [sum(1 for r in rides if s <= r.requested_at < s + 1) for s in seconds]
    completed = [sum(1 for r in rides if r.ended_at is not None and s <= r.ended_at < s + 1) for s in seconds]
    axis.step(seconds, requested, where="post", color="#7f7f7f", label="rides requested / s")
    axis.step(seconds, completed, where="post", color="#1f4e79", label="rides ended / s")
    axis.set_ylabel("rides per second")
    axis.set_xlabel("seconds since the drill started")
    axis.set_title(f"{verdict['scenario']}: throughput")
    axis.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(target / "throughput.png", dpi=80)
    plt.close(fig)
    return "throughput.png"


def summary(verdict: dict[str, Any]) -> str:
    lines = [
        f"# Drill `{verdict['scenario']}`: {'valid' if verdict['valid'] else 'INVALID'}",
        "",
        f"{verdict['rides']} rides at {verdict['rate']} rides/s over {verdict['seconds']} s:"
        f" {verdict['completed']} completed, {verdict['cancelled']} cancelled, {verdict['unfinished']} unfinished."
        f" Requests retried by clients: {verdict['requests_retried']}."
        f" Slowest recovery: {verdict['recovery_seconds']} s.",
        "",
        "| fault | target | step | from (s) | to (s) | rides in flight | recovery (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in verdict["faults"]:
        lines.append(
            f"| {f['name']} | {f['target']} | {f['detail'].get('step', '')} | {f['start']} | {f['end']}"
            f" | {f.get('rides_in_flight')} | {f['recovery_seconds']} |"
        )
    findings = {k: v for k, v in verdict.items() if k not in ENGINE_KEYS}
    if findings:
        lines += ["", "## Findings of the scenario", ""]
        lines += [f"- {name}: {json.dumps(value)[:500]}" for name, value in findings.items()]
    lines += ["", "## Violations", ""]
    if verdict["violations"]:
        lines += [f"- **{name}**: {json.dumps(found)[:500]}" for name, found in verdict["violations"].items()]
    else:
        lines.append("None, over the history, the databases, the psp's records and the topics.")
    lines += ["", "## Stuck work", ""]
    if verdict["stuck"]:
        lines += [f"- **{name}**: {json.dumps(found)[:500]}" for name, found in verdict["stuck"].items()]
    else:
        lines.append(f"None: nothing was left unresolved past the checker's bound (in flight: {verdict['in_flight']}).")
    if verdict.get("checks"):
        lines += ["", "## Scenario checks", ""]
        lines += [f"- {name}: {'held' if held else 'FAILED'}" for name, held in verdict["checks"].items()]
    lines += [
        "",
        "## Plots",
        "",
        "![latency](latency.png)",
        "",
        "![throughput](throughput.png)",
        "",
        "The client history (invoke / ok / fail / info per operation) is in `history.jsonl`.",
        "",
    ]
    return "\n".join(lines)
