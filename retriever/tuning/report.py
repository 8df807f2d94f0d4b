"""The tuning report: JSON for machines, Markdown for people, both in the output folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _table(title: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    metrics = [m for m in old if "@" in m and m in new]  # ndcg@10, recall@10, ...
    lines = [f"### {title}", "", "| metric | old | new | change |", "| --- | --- | --- | --- |"]
    for m in metrics:
        lines.append(f"| {m} | {old[m]:.4f} | {new[m]:.4f} | {new[m] - old[m]:+.4f} |")
    return [*lines, ""]


def write_report(out: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    lines = [
        "# Embedder tuning report",
        "",
        f"- base model: `{report['base_model']}`",
        f"- tuned model: `{report['model']}`",
        f"- pairs: {report['pairs']['source']}: {report['pairs']['train']} for training, "
        f"{report['pairs']['heldout']} held out ({report['pairs'].get('by_kind', {})})",
        f"- training: {report['training']['steps']} steps, {report['training']['seconds']} s",
        "",
    ]
    held = report.get("heldout")
    if held and held.get("queries"):
        lines += _table(
            f"Held-out pairs ({held['queries']} queries, {held['corpus']} passages)",
            held["old"],
            held["new"],
        )
    for mode, result in (report.get("beir") or {}).items():
        lines += _table(
            f"BEIR {result['new'].get('dataset', '')} {result['new'].get('split', '')} "
            f"split, {mode} ({result['new'].get('queries', 0)} queries)",
            result["old"],
            result["new"],
        )
    lines += [
        f"Activate with `enclave tune activate {out}`; `enclave tune rollback` goes back.",
        "",
    ]
    md_path.write_text("\n".join(lines), encoding="utf-8")
    return json_path, md_path
