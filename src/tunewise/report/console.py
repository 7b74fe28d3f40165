"""What the terminal shows after a run or an advice, the --fail-on gate, and reloading a run."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from tunewise.errors import TunewiseError
from tunewise.results import RunResults, Verdict


def _fmt(m) -> str:
    return f"{m.value:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]"


def print_verdict(verdict: Verdict, console) -> None:
    console.print(f"\n[bold]Verdict: {verdict.decision}[/bold]"
                  + (f" ({verdict.candidate}{' on ' + verdict.model if verdict.model else ''})" if verdict.candidate else ""))
    console.print(verdict.summary, markup=False)
    for r in verdict.reasons:
        console.print(f"  - [{r.criterion}] {r.finding}", markup=False, highlight=False)
    for line in verdict.constraints:
        console.print(f"  constraint: {line}", markup=False, highlight=False)
    for line in verdict.would_change:
        console.print(f"  would change: {line}", markup=False, highlight=False)


def print_summary(results: RunResults, out_dir: Path, console) -> None:
    metric = results.metric
    table = Table(title=f"{results.task.name}: {metric} on up to {results.split.test_scored} "
                        f"of {results.split.test} test records")
    for col in ("candidate", "model", "status", "records", metric, "p95 ms", "train s"):
        table.add_column(col)
    for c in results.candidates:
        m = c.metrics.get(metric)
        table.add_row(c.name, c.model or "-", c.status if c.status == "ok" else f"[red]{c.status}[/red]",
                      str(c.test_records or "-"), _fmt(m) if m else (c.error or "")[:60],
                      f"{c.latency_ms['p95']:.0f}" if c.latency_ms else "-",
                      f"{c.train_seconds:.0f}" if c.train_seconds else "-")
    console.print(table)
    print_warnings(results.warnings, console)
    if results.test_scoring:
        from tunewise.report._common import scoring_summary

        console.print(scoring_summary(results.test_scoring), markup=False, highlight=False)
    if results.verdict:
        print_verdict(results.verdict, console)
    if results.stage_seconds:
        stages = ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in results.stage_seconds.items())
        console.print(f"\ntime: {stages}; total {sum(results.stage_seconds.values()):.0f} s", highlight=False)
    console.print(f"\nreport: {out_dir / 'report.html'}  (also report.md, results.json)")


def print_warnings(warnings: list[str], console) -> None:
    for text in warnings:
        console.print(f"warning: {text}", style="bold yellow", markup=False, highlight=False, soft_wrap=True)


def gate_failed(rule: str, results: RunResults) -> tuple[bool, str]:
    """(failed, why) for --fail-on."""
    v = results.verdict
    decision = v.decision if v else "none"
    if rule == "below-target":
        target = results.task.target
        if target is None:
            raise TunewiseError("--fail-on below-target needs a target", fix="set target in the task or --target")
        metric = results.metric
        name = v.candidate if v and v.candidate else None
        best = results.candidate(name) if name else None
        score = best.metrics[metric].value if best and metric in best.metrics else None
        return (score is None or score < target), f"recommended {name}: {metric} {score} vs target {target}"
    rules = {"not-fine-tune": decision != "FINE_TUNE", "fine-tune": decision == "FINE_TUNE",
             "insufficient": decision == "INSUFFICIENT_EVIDENCE"}
    if rule not in rules:
        raise TunewiseError(f"--fail-on '{rule}': unknown", fix=f"use one of below-target, {', '.join(rules)}")
    return rules[rule], f"verdict is {decision}"


def load_run(run_dir: Path, store_dir: Path) -> RunResults:
    """Kept for callers of this old home: see tunewise.api.load_run."""
    from tunewise.api import load_run as load

    return load(run_dir, store_dir)
