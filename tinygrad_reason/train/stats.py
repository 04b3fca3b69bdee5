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
