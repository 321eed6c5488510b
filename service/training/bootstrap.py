"""Bootstrap intervals over evaluation users: of a mean, and of a paired difference.

Users are resampled with replacement, the same resamples for every array,
so the difference of two models scored on the same users is paired: the
users' own difficulty cancels and the interval is much narrower than the
two separate intervals suggest.
"""

from __future__ import annotations

import numpy as np

#: Resamples per interval: the percentile ends move by about 0.002 between seeds.
RESAMPLES = 1000
LEVEL = 0.95


def mean_intervals(samples: dict[str, np.ndarray], *, seed: int = 0,
                   resamples: int = RESAMPLES, level: float = LEVEL) -> dict[str, list[float]]:
    """Return ``{name: [low, high]}``, the percentile interval of each array's mean.

    All arrays hold one value per evaluation user, in the same user order.
    """
    names = list(samples)
    values = np.vstack([np.asarray(samples[name], dtype=np.float64) for name in names])
    n = values.shape[1]
    if n == 0:
        return {name: [0.0, 0.0] for name in names}
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, len(names)))
    for r in range(resamples):
        counts = np.bincount(rng.integers(0, n, size=n), minlength=n)
        means[r] = values @ counts / n
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail], axis=0)
    return {name: [float(low[i]), float(high[i])] for i, name in enumerate(names)}


def paired_difference(model: dict[str, np.ndarray], baseline: dict[str, np.ndarray], *,
                      seed: int = 0, resamples: int = RESAMPLES,
                      level: float = LEVEL) -> dict[str, dict[str, float]]:
    """Return ``{name: {"mean", "low", "high"}}`` of model minus baseline on the same users."""
    differences = {name: np.asarray(model[name], np.float64) - np.asarray(baseline[name])
                   for name in model}
    bounds = mean_intervals(differences, seed=seed, resamples=resamples, level=level)
    return {name: {"mean": float(diff.mean()) if diff.size else 0.0,
                   "low": bounds[name][0], "high": bounds[name][1]}
            for name, diff in differences.items()}
