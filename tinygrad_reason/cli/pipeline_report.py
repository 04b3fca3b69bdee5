"""The pipeline's report: one row per stage on each split, with Wilson intervals, the gain over the
row it builds on and its p-values; as markdown, JSON and a PNG; and the spread over seeds."""
from __future__ import annotations

import json
import os

from ..io.atomic import write_json, write_text
from ..train.stats import mcnemar_p, two_proportion_p, wilson_interval

# (row, key, title, model, method, the row it builds on, the stages that trained what it uses)
ROWS = (
    ("1", "base", "base: direct answers, greedy", "direct", "greedy", None, ("direct",)),
    ("2", "cot", "+ chain-of-thought SFT, greedy", "cot", "greedy", "base", ("cot",)),
    ("3", "sc", "+ self-consistency@{N}", "cot", "sc", "cot", ("cot",)),
    ("4", "tool", "+ calculator tool, greedy", "cot", "tool", "cot", ("cot",)),
    ("5", "refine", "+ self-refinement@{K}", "cot", "refine", "cot", ("cot",)),
    ("6a", "prm-bon", "+ verifier: best-of-{N} by the PRM", "cot", "prm-bon", "sc", ("cot", "labels", "prm")),
    ("6b", "prm-vote", "+ verifier: PRM-weighted vote@{N}", "cot", "prm-vote", "sc", ("cot", "labels", "prm")),
    ("7", "grpo", "+ GRPO (from row 2), greedy", "grpo", "greedy", "cot", ("cot", "grpo")),
    ("8a", "grpo-bon", "+ GRPO + PRM best-of-{N}", "grpo", "prm-bon", "grpo", ("cot", "grpo", "labels", "prm")),
    ("8b", "grpo-vote", "+ GRPO + PRM-weighted vote@{N}", "grpo", "prm-vote", "grpo", ("cot", "grpo", "labels", "prm")),
)
SPLITS = ("test", "ood")
ALPHA = 0.05


def _marks(records: dict, split: str, model: str, method: str) -> dict:
    stage = "eval-grpo" if model == "grpo" else "eval-sft"
    return records[stage]["splits"][split][model][method]


def build_report(cfg: dict, records: dict) -> dict:
    """records: each stage's record (OUT/stages/STAGE.json). Returns {"rows": {split: [row]}, ...}."""
    p = cfg["pipeline"]
    steps = {"direct": records["direct"]["steps"], "cot": records["cot"]["steps"], "labels": 0,
             "prm": records["prm"]["steps"], "grpo": records["grpo"]["steps"]}
    params = {"direct": records["direct"]["parameters"], "cot": records["cot"]["parameters"]}
    rows = {}
    for split in SPLITS:
        out, by_key = [], {}
        for label, key, title, model, method, base, trained in ROWS:
            m = _marks(records, split, model, method)
            right, n = m["right"], len(m["right"])
            c = sum(right)
            lo, hi = wilson_interval(c, n)
            row = {"row": label, "key": key, "stage": title.format(N=p["paths"], K=p["refine_rounds"]),
                   "accuracy": c / n if n else float("nan"), "correct": c, "n": n, "ci95": [lo, hi],
                   "builds_on": base, "parameters": params["direct" if model == "direct" else "cot"] +
                   (records["prm"]["parameters"] if "prm" in trained else 0),
                   "train_steps": sum(steps[s] for s in trained),
                   "train_seconds": round(sum(records[s]["seconds"] for s in trained), 1),
                   "test_tokens": m["tokens"], "test_seconds": m["seconds"]}
            if "pass_at_n" in m:
                row["pass_at_n"] = m["pass_at_n"]
            if base is not None:
                b = by_key[base]
                row["gain"] = row["accuracy"] - b["accuracy"]
                row["p_two_proportion"] = two_proportion_p(c, n, b["correct"], b["n"])
                row["p_paired"] = mcnemar_p(right, b["_right"])
                row["significant"] = bool(row["gain"] > 0 and row["p_two_proportion"] < ALPHA)
            row["_right"] = right
            by_key[key] = row
            out.append(row)
        for row in out:
            row["builds_on_row"] = by_key[row["builds_on"]]["row"] if row["builds_on"] else None
            del row["_right"]
        rows[split] = out
    return {"rows": rows, "config": cfg, "alpha": ALPHA,
            "stage_seconds": {s: r["seconds"] for s, r in records.items()},
            "prm_best_auroc": records["prm"].get("best_auroc"),
            "labels": {k: records["labels"][k] for k in ("solutions", "right")}}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _p(x) -> str:
    return "" if x is None else f"{x:.2g}"


def report_table(report: dict) -> str:
    lines = []
    for split in SPLITS:
        lines += [f"### {split}", "",
                  "| # | stage | accuracy | correct / n | 95% CI (Wilson) | builds on | gain | p (two-proportion) | "
                  "p (paired) | significant | parameters | train steps | train s | test-time tokens | test-time s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in report["rows"][split]:
            gain = f"{100 * r['gain']:+.1f}" if "gain" in r else ""
            sig = "" if "gain" not in r else ("yes" if r["significant"] else "no")
            lines.append(f"| {r['row']} | {r['stage']} | {_pct(r['accuracy'])} | {r['correct']} / {r['n']} | "
                         f"[{_pct(r['ci95'][0])}, {_pct(r['ci95'][1])}] | {r['builds_on_row'] or ''} | {gain} | "
                         f"{_p(r.get('p_two_proportion'))} | {_p(r.get('p_paired'))} | {sig} | {r['parameters']:,} | "
                         f"{r['train_steps']} | {r['train_seconds']:.0f} | {r['test_tokens']} | "
                         f"{r['test_seconds']:.1f} |")
        lines.append("")
    lines.append(f"gain: points over the row it builds on; p (two-proportion): pooled z-test; p (paired): exact "
                 f"McNemar on the same problems; significant: gain > 0 at two-proportion p < {ALPHA}. Parameters "
                 "of the verifier rows count the policy and the PRM (its trunk copy and head); train s sums "
                 "the stages the row uses (label sampling included).")
    return "\n".join(lines) + "\n"


def plot_report(report: dict, png_path: str) -> bool:
    """Accuracy per stage with Wilson whiskers, test and OOD side by side; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(SPLITS), figsize=(12, 5), sharey=True)
    for ax, split in zip(axes, SPLITS):
        rows = report["rows"][split]
        y = list(range(len(rows)))[::-1]
        acc = [100 * r["accuracy"] for r in rows]
        err = [[a - 100 * r["ci95"][0] for a, r in zip(acc, rows)], [100 * r["ci95"][1] - a for a, r in zip(acc, rows)]]
        colors = ["tab:gray" if "gain" not in r else "tab:green" if r["significant"] else "tab:orange" for r in rows]
        ax.barh(y, acc, xerr=err, color=colors, capsize=3)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{r['row']}. {r['stage']}" for r in rows], fontsize=8)
        ax.set_xlim(0, 100)
        ax.set_xlabel("accuracy, % (95% Wilson CI)")
        ax.set_title(f"{split} ({rows[0]['n']} problems)")
    fig.suptitle("the staged pipeline (green: significantly above the row it builds on)", fontsize=10)
    fig.tight_layout()
    tmp = png_path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, png_path)
    return True


def write_report(report: dict, out: str) -> list:
    table = report_table(report)
    write_text(os.path.join(out, "table.md"), table)
    write_json(os.path.join(out, "results.json"), report)
    files = ["table.md", "results.json"]
    if plot_report(report, os.path.join(out, "pipeline.png")):
        files.append("pipeline.png")
    return files


def spread(reports: list) -> dict:
    """Per split and row, over seeds: mean, min and max accuracy, and in how many seeds the gain was
    significant."""
    out = {}
    for split in SPLITS:
        rows = []
        for i, (label, key, *_rest) in enumerate(ROWS):
            each = [r["rows"][split][i] for r in reports]
            acc = [x["accuracy"] for x in each]
            rows.append({"row": label, "key": key, "stage": each[0]["stage"], "mean": sum(acc) / len(acc),
                         "min": min(acc), "max": max(acc), "accuracies": acc, "n": each[0]["n"],
                         "mean_gain": (sum(x["gain"] for x in each) / len(each)) if "gain" in each[0] else None,
                         "significant_seeds": sum(bool(x.get("significant")) for x in each)})
        out[split] = rows
    return {"seeds": len(reports), "rows": out}


def write_spread(run_dirs: list, out: str) -> str:
    """The spread table of finished seed runs (each a pipeline directory with results.json)."""
    reports = []
    for d in run_dirs:
        with open(os.path.join(d, "results.json")) as f:
            reports.append(json.load(f))
    s = spread(reports)
    lines = []
    for split in SPLITS:
        lines += [f"### {split}, {s['seeds']} seeds", "",
                  "| # | stage | mean accuracy | range | mean gain | significant in | accuracy per seed |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in s["rows"][split]:
            gain = "" if r["mean_gain"] is None else f"{100 * r['mean_gain']:+.1f}"
            sig = "" if r["mean_gain"] is None else f"{r['significant_seeds']} / {s['seeds']}"
            lines.append(f"| {r['row']} | {r['stage']} | {_pct(r['mean'])} | {_pct(r['min'])} - {_pct(r['max'])} | "
                         f"{gain} | {sig} | {', '.join(_pct(a) for a in r['accuracies'])} |")
        lines.append("")
    text = "\n".join(lines)
    write_text(os.path.join(out, "spread.md"), text)
    write_json(os.path.join(out, "spread.json"), {"runs": run_dirs, **s})
    return text
