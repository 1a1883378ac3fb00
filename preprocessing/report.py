"""The prepare report: per source and step, items in, items out, and a line for every
dropped item (id and reason). `check` enforces in == out + dropped for every step and
that each step starts with what the previous one kept."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maerak.files import dumps_json
from maerak.schema import one_line


@dataclass
class Step:
    step: str
    n_in: int
    n_out: int = 0
    dropped: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def drop(self, rid: str, reason: str) -> None:
        self.dropped.append({"id": rid, "reason": reason})

    def as_dict(self) -> dict:
        return {"step": self.step, "in": self.n_in, "out": self.n_out, "dropped_count": len(self.dropped),
                "dropped": self.dropped, "notes": self.notes}


@dataclass
class Report:
    profile: str
    sources: dict[str, dict] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add_source(self, name: str, kind: str, stages: tuple[int, ...], files: list[dict]) -> None:
        self.sources[name] = {"kind": kind, "stages": list(stages), "files": files, "steps": []}

    def add_step(self, source: str, step: Step) -> Step:
        self.sources[source]["steps"].append(step)
        return step

    def check(self) -> list[str]:
        errors = []
        for name, src in self.sources.items():
            prev = None
            for st in src["steps"]:
                if st.n_in != st.n_out + len(st.dropped):
                    errors.append(f"{name}/{st.step}: in {st.n_in} != out {st.n_out} + dropped {len(st.dropped)}")
                if prev is not None and st.n_in != prev.n_out:
                    errors.append(f"{name}/{st.step}: in {st.n_in} != previous step's out {prev.n_out}")
                prev = st
        return errors

    def as_dict(self) -> dict:
        return {
            "profile": self.profile,
            "sources": {n: {**s, "steps": [st.as_dict() for st in s["steps"]]} for n, s in self.sources.items()},
            **self.extra,
        }

    def markdown(self) -> str:
        d = self.as_dict()
        lines = [f"# Prepare report: profile `{self.profile}`", ""]
        lines += [f"> {n}" for n in d.get("notices", [])] + ([""] if d.get("notices") else [])
        for stage, info in d.get("stages", {}).items():
            by = ", ".join(f"{k} {v}" for k, v in info["by_source"].items()) or "-"
            lines.append(f"- **{stage}**: {info['rows']} rows ({by}) -> `{info['file']}`")
        lines += ["", "| source | step | in | out | dropped |", "|---|---|---:|---:|---:|"]
        for name, src in d["sources"].items():
            for st in src["steps"]:
                lines.append(f"| {name} | {st['step']} | {st['in']} | {st['out']} | {st['dropped_count']} |")
        for name, src in d["sources"].items():
            files = ", ".join(f["path"] for f in src["files"]) or "none"
            lines += ["", f"## {name} ({src['kind']}, stage {', '.join(map(str, src['stages']))})", f"files: {files}"]
            for st in src["steps"]:
                if st["dropped"] or st["notes"]:
                    lines.append(f"### {st['step']}")
                    lines += [f"- dropped `{x['id']}`: {x['reason']}" for x in st["dropped"]]
                    lines += [f"- note: {n}" for n in st["notes"]]
        cont = d.get("contamination", {})
        if cont:
            lines += ["", "## Contamination (train vs dev/test; eval items are never dropped)"]
            pairs = cont.get("near_duplicates", []) + cont.get("shared_conversations", [])
            lines += [f"- {c['kind']}: `{c['train']}` ~ `{c['eval']}` -> {c['action']}" for c in pairs] or ["- none found"]
        lines += token_length_lines(d.get("token_lengths"))
        dist = d.get("distill")
        if dist:
            lines += ["", "## Distillation"]
            lines += [dist["why"]] if dist.get("status") == "off" else [f"- {k}: {v}" for k, v in dist.items() if k != "status"]
        return "".join(one_line(line) + "\n" for line in lines)  # an id with a newline cannot add a line

    def files(self, folder: Path) -> dict[Path, bytes]:
        """report.json and report.md as bytes, for prepare to write with the stage files."""
        return {folder / "report.json": dumps_json(self.as_dict()).encode("utf-8"),
                folder / "report.md": self.markdown().encode("utf-8")}


def token_length_lines(info: dict | None) -> list[str]:
    if not info:
        return []
    lines = ["", "## Token lengths (Axolotl's alpaca count: prompt with BOS + answer + EOS)"]
    if not info["checked"]:
        return lines + [f"Not checked: no tokenizer `{info['tokenizer']}` ({info['reason']})."]
    lines += [f"tokenizer: `{info['tokenizer']}`", "", "| stage | sequence_len | source | rows | min | mean | p50 | p90 | p99 | max | over |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for stage, st in info["stages"].items():
        for src, dist in st.get("by_source", {}).items():
            n_over = sum(o["source"] == src for o in st["over"])
            cells = [dist.get(k, "-") for k in ("rows", "min", "mean", "p50", "p90", "p99", "max")]
            lines.append(f"| {stage} | {st['sequence_len']} | {src} | " + " | ".join(map(str, cells)) + f" | {n_over} |")
    over = [o for st in info["stages"].values() for o in st.get("over", [])]
    lines += ["", f"Rows over sequence_len: {len(over)}"]
    lines += [f"- stage {o['stage']} `{o['source']}:{o['id']}` ({o['row']}): {o['tokens']} tokens > {o['sequence_len']} -> {o['action']}"
              for o in over]
    return lines
