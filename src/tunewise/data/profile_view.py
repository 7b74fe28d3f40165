"""The profile as a readable terminal summary (the JSON form is printed as-is)."""

from __future__ import annotations

from rich.table import Table


def print_profile(p: dict, task, console) -> None:
    records = p.get("records", {})
    console.print(f"[bold]{task.name}[/bold] ({task.type}); split: {p.get('split_source', '')}")
    console.print("records: " + ", ".join(f"{k} {v}" for k, v in records.items()))
    labels = p.get("labels")
    if labels:
        table = Table(title=f"labels ({p.get('label_count')})")
        table.add_column("label")
        for split in labels:
            table.add_column(split, justify="right")
        names = sorted({n for counts in labels.values() if isinstance(counts, dict) for n in counts})
        for name in names[:40]:
            table.add_row(name, *[str(labels[s].get(name, 0)) if isinstance(labels[s], dict) else "" for s in labels])
        console.print(table)
        if len(names) > 40:
            console.print(f"... {len(names) - 40} more labels (see --json)")
    for key in ("tokens", "duplicates", "leakage", "dates", "domain_gap"):
        value = p.get(key)
        if value is None:
            continue
        if isinstance(value, dict):
            shown = {k: v for k, v in value.items() if not isinstance(v, (list, dict))}
            console.print(f"{key}: " + ", ".join(f"{k}={_short(v)}" for k, v in shown.items()), highlight=False)
            if value.get("interpretation"):
                console.print(f"  {value['interpretation']}", highlight=False)
        else:
            console.print(f"{key}: {value}")
    console.print(f"multi-turn share: {p.get('multi_turn_share', 0):.1%}")
    skipped = p.get("skipped", {})
    if skipped.get("count"):
        console.print(f"[yellow]skipped {skipped['count']} invalid record(s)[/yellow]")


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
