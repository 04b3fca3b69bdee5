"""Metrics as JSON lines (one record per line, appended, so an interrupted run keeps what it logged)
and their curves as a PNG when matplotlib is installed."""
from __future__ import annotations

import json
import os


def log_metrics(path: str | None, record: dict) -> None:
    """Append one record to the JSONL file at `path` (nothing when path is None)."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: str) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _save(fig, png_path: str) -> None:
    """Write a figure to a temp file and rename it, so a reader never sees half a PNG."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    tmp = png_path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png_path)


def plot_metrics(log_path: str, png_path: str, score: str = "accuracy") -> bool:
    """Loss and held-out score curves from a metrics JSONL; False (and nothing written) without
    matplotlib. Written to a temp file and renamed, so a reader never sees half a PNG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = read_metrics(log_path)
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train])
    axes[0].set(xlabel="step", ylabel="loss", title="training loss")
    axes[1].plot([r["step"] for r in evals], [r[score] for r in evals], marker="o")
    axes[1].set(xlabel="step", ylabel=score, title=f"held-out {score}", ylim=(0, 1))
    _save(fig, png_path)
    return True


def _smooth(values, k: int = 10):
    out, acc = [], []
    for v in values:
        acc = (acc + [v])[-k:]
        out.append(sum(acc) / len(acc))
    return out


def plot_rl_metrics(log_path: str, png_path: str) -> bool:
    """GRPO's curves from its metrics JSONL: reward, held-out accuracy, completion lengths (right and
    wrong completions apart: Dr. GRPO's length bias shows in the wrong ones), and the clip ratio,
    KL and entropy. False (nothing written) without matplotlib; written to a temp file and renamed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = read_metrics(log_path)
    train = [r for r in rows if r["kind"] == "train" and "reward" in r]
    evals = [r for r in rows if r["kind"] == "eval"]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    steps = [r["step"] + 1 for r in train]

    def curve(ax, key, label):
        pts = [(s, r[key]) for s, r in zip(steps, train) if r.get(key) == r.get(key) and key in r]   # skip NaN
        if pts:
            ax.plot([p[0] for p in pts], _smooth([p[1] for p in pts]), label=label)

    curve(axes[0], "reward", "reward (mean of 10 steps)")
    axes[0].set(xlabel="step", ylabel="reward", title="rollout reward")
    acc = [r["accuracy"] for r in evals]
    axes[1].plot([r["step"] for r in evals], acc, marker="o")
    axes[1].set(xlabel="step", ylabel="accuracy", title="held-out accuracy (greedy)",
                ylim=(max(0.0, min(acc, default=0) - 0.1), min(1.0, max(acc, default=1) + 0.1)))
    for key, label in (("completion_length_mean", "all"), ("correct_length_mean", "right"),
                       ("incorrect_length_mean", "wrong")):
        curve(axes[2], key, label)
    axes[2].set(xlabel="step", ylabel="tokens", title="completion length")
    axes[2].legend()
    for key in ("clip_region_ratio", "kl", "entropy"):
        curve(axes[3], key, key)
    axes[3].set(xlabel="step", title="clip ratio, KL, entropy")
    axes[3].legend()
    _save(fig, png_path)
    return True
