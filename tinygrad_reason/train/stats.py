"""The statistics every result table uses: Wilson intervals for an accuracy and the two-proportion
z-test for the difference of two accuracies."""
from __future__ import annotations

import math


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple:
    """95% Wilson score interval of a binomial proportion (well-behaved near 0 and 1)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def two_proportion_p(c1: int, n1: int, c2: int, n2: int) -> float:
    """Two-sided p-value of a two-proportion z-test (pooled): do c1/n1 and c2/n2 differ?"""
    if not n1 or not n2:
        return float("nan")
    p = (c1 + c2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = abs(c1 / n1 - c2 / n2) / se
    return math.erfc(z / math.sqrt(2))


def mcnemar_p(a_right, b_right) -> float:
    """Two-sided exact McNemar p-value for two methods graded on the SAME problems: only the
    problems where they disagree count (b = A right and B wrong, c = the reverse); under the null
    each disagreement is a fair coin, p = min(1, 2 P[Binomial(b + c, 1/2) <= min(b, c)])."""
    a, b_ = list(a_right), list(b_right)
    if len(a) != len(b_):
        raise ValueError(f"mcnemar_p: {len(a)} against {len(b_)} problems")
    b = sum(1 for x, y in zip(a, b_) if x and not y)
    c = sum(1 for x, y in zip(a, b_) if y and not x)
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def auroc(scores, labels) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative
    (ties count half), by the rank-sum formula with average ranks; NaN with one class only."""
    import numpy as np
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"auroc: {s.shape[0]} scores against {y.shape[0]} labels")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):                       # average rank over each run of tied scores
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def reliability(scores, labels, bins: int = 10) -> dict:
    """Calibration of predicted probabilities: per equal-width bin of [0, 1], the number of
    predictions, their mean and the fraction actually right; plus the expected calibration error
    (ECE, the count-weighted mean |mean prediction - fraction right|) and the Brier score."""
    import numpy as np
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"reliability: {s.shape[0]} scores against {y.shape[0]} labels")
    if bins < 1:
        raise ValueError(f"reliability: bins must be >= 1, got {bins}")
    which = np.minimum((s * bins).astype(int), bins - 1)
    rows, ece = [], 0.0
    for k in range(bins):
        sel = which == k
        count = int(sel.sum())
        mean_p = float(s[sel].mean()) if count else float("nan")
        frac = float(y[sel].mean()) if count else float("nan")
        if count:
            ece += count * abs(mean_p - frac)
        rows.append({"lo": k / bins, "hi": (k + 1) / bins, "count": count, "mean_predicted": mean_p,
                     "fraction_right": frac})
    n = len(s)
    return {"bins": rows, "ece": ece / n if n else float("nan"),
            "brier": float(np.mean((s - y) ** 2)) if n else float("nan"), "n": n}


def grouped_auroc(scores, labels, groups) -> tuple:
    """(mean AUROC within groups, number of groups counted): the AUROC of each group (a problem's
    sampled solutions) that holds both classes, averaged. What a reranker needs is this one: a
    verifier can rank solutions well across problems by knowing which problems are hard, and still
    not tell a problem's right solutions from its wrong ones."""
    import numpy as np
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=bool).reshape(-1)
    g = np.asarray(groups).reshape(-1)
    if not s.shape == y.shape == g.shape:
        raise ValueError(f"grouped_auroc: {s.shape[0]} scores, {y.shape[0]} labels, {g.shape[0]} groups")
    values = []
    for key in np.unique(g):
        sel = g == key
        if 0 < int(y[sel].sum()) < int(sel.sum()):
            values.append(auroc(s[sel], y[sel]))
    return (float(np.mean(values)) if values else float("nan")), len(values)
