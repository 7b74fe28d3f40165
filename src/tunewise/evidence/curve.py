"""Learning-curve fit: would more data of this kind help, and how much?

We fit error = A * n^-b + E (error = 1 - metric) to the subset scores and extrapolate. Extrapolating a
power law from a few small subsets is known to be unreliable and tends to overshoot (Jain et al. 2023,
"A Meta-Learning Approach to Predicting Performance and Data Requirements"), so every projection carries
a parametric-bootstrap interval, and flat, noisy or badly fitting curves are not extrapolated at all.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from tunewise.results import CurvePoint, Interval, LearningCurve, Projection

MIN_POINTS = 4  # three parameters; a fourth point is the least that can show a misfit
FACTORS = (2.0, 4.0)
B_NEAR_ZERO = 0.05  # error ~ n^-0.05 falls <4% per doubling: no learning worth the name
N_NEVER = 1e12  # stands in for "never" in n_for_target (JSON has no infinity)
_BOUNDS = ([0.0, 0.0, 0.0], [np.inf, 2.0, 1.0])
_B_GRID = np.linspace(0.0, 2.0, 81)[1:]


def _model(x: np.ndarray, a: float, b: float, e: float) -> np.ndarray:
    # x is n / n0: scaling keeps A near the error's magnitude, which conditions the fit.
    return a * np.power(x, -b) + e


def _jac(x: np.ndarray, a: float, b: float, e: float) -> np.ndarray:
    z = np.power(x, -b)
    return np.stack([z, -a * z * np.log(x), np.ones_like(x)], axis=1)


def _grid_start(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Best (a, b, e) over a grid of b; for fixed b the model is linear in (a, e).

    A cheap global search, so curve_fit starts in the right basin instead of a local minimum.
    """
    best, best_sse = (max(y.mean(), 1e-6), 0.5, 0.0), np.inf
    for b in _B_GRID:
        z = np.power(x, -b)
        zc, yc = z - z.mean(), y - y.mean()
        a = max(float(zc @ yc / (zc @ zc)) if zc @ zc > 0 else 0.0, 0.0)
        e = float(np.clip(y.mean() - a * z.mean(), 0.0, 1.0))
        if e in (0.0, 1.0):  # E hit a bound: refit a with E fixed there
            a = max(float(z @ (y - e) / (z @ z)), 0.0)
        sse = float(np.sum((a * z + e - y) ** 2))
        if sse < best_sse:
            best, best_sse = (a, float(b), e), sse
    return best


def _curve_fit(x: np.ndarray, y: np.ndarray, p0) -> np.ndarray | None:
    try:
        p, _ = curve_fit(_model, x, y, p0=p0, bounds=_BOUNDS, jac=_jac, max_nfev=2000)
    except (RuntimeError, ValueError):
        return None
    return p if np.all(np.isfinite(p)) else None


def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Least-squares fit from the grid start; other starts only if that one fails to converge."""
    starts = [_grid_start(x, y), (max(y[0], 1e-3), 0.5, 0.0), (max(y[0] - y[-1], 1e-3), 1.0, y[-1] * 0.9)]
    for p0 in starts:
        p0 = np.clip(np.asarray(p0, float), [0, 0, 0], [np.inf, 2, 1])
        p = _curve_fit(x, y, p0)
        if p is not None:
            return p
    return None


def _metric_at(p: np.ndarray, x: float | np.ndarray) -> np.ndarray:
    return np.clip(1.0 - _model(np.asarray(x, float), *p), 0.0, 1.0)


def _n_for(p: np.ndarray, target: float, n0: float) -> float:
    """n where 1 - (a (n/n0)^-b + e) = target; N_NEVER when the target is at or above the ceiling."""
    a, b, e = p
    gap = 1.0 - target - e
    if gap <= 0 or b <= 0:
        return N_NEVER
    if a <= 0:
        return 1.0  # no learning term: the target is met at any size
    return float(min(n0 * (a / gap) ** (1.0 / b), N_NEVER))


def _interval(value: float, draws: np.ndarray, lo: float = -np.inf, hi: float = np.inf) -> Interval:
    q_lo, q_hi = np.percentile(draws, [2.5, 97.5]) if draws.size else (value, value)
    q_lo, q_hi = float(np.clip(q_lo, lo, hi)), float(np.clip(q_hi, lo, hi))
    return Interval(value=value, ci_low=min(q_lo, value), ci_high=max(q_hi, value))


def fit_learning_curve(points: list[CurvePoint], metric: str, candidate: str, target: float | None,
                       n_full: int, n_boot: int = 1000, seed: int = 0,
                       resampled: np.ndarray | None = None) -> LearningCurve:
    """Fit error = A n^-b + E to the ok points; project to 2x and 4x n_full with bootstrap intervals.

    Intervals come from refitting the curve on bootstrap draws of the points. `resampled`, shape
    (draws, len(points)), gives every point's metric on the same resamples of the test items (see
    stats.joint_resamples): the points share one test split, so this keeps their correlation. Without
    it each point is redrawn independently from a normal with sd = (ci_high - ci_low) / 3.92. Failed
    refits are dropped. The curve is
    marked not extrapolable, with a plain-words reason, when there are fewer than 4 ok points, the fit
    fails, the rise is within the noise, b is near zero, the 2x projection interval is wider than
    the observed metric range, or the fit misses the points by more than their noise.
    """
    curve = LearningCurve(candidate=candidate, metric=metric, points=points)
    order = sorted((i for i, p in enumerate(points) if p.status == "ok"), key=lambda i: points[i].n)
    ok = [points[i] for i in order]
    if len(ok) < MIN_POINTS:
        curve.reason = (f"only {len(ok)} learning-curve point(s) trained successfully; a 3-parameter curve "
                        f"needs at least {MIN_POINTS} to check the fit, so it is not extrapolated")
        return curve

    n = np.array([p.n for p in ok], float)
    v = np.array([p.value for p in ok], float)
    half = np.array([(p.ci_high - p.ci_low) / 2 for p in ok], float)
    sd = np.maximum(half / 1.96, 0.0)
    n0 = float(n_full) if n_full > 0 else float(n.max())
    x, y = n / n0, 1.0 - v

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        p = _fit(x, y)
        if p is None:
            curve.reason = "the power-law fit did not converge on these points, so the curve is not extrapolated"
            return curve
        rng = np.random.default_rng(seed)
        boots = []
        point_draws = (resampled[:, order] if resampled is not None
                       else v + rng.normal(0.0, 1.0, (n_boot, v.size)) * sd)
        for row in point_draws:
            pb = _curve_fit(x, np.clip(1.0 - row, 0.0, 1.0), p)
            if pb is not None:
                boots.append(pb)
    boots_arr = np.array(boots).reshape(-1, 3)

    a, b, e = (float(t) for t in p)
    curve.fit = {"A": a * n0 ** b, "b": b, "E": e}
    curve.ceiling = _interval(1.0 - e, 1.0 - boots_arr[:, 2], 0.0, 1.0)
    proj = []
    for f in FACTORS:
        draws = _metric_at(boots_arr.T, f) if boots_arr.size else np.array([])
        iv = _interval(float(_metric_at(p, f)), np.asarray(draws), 0.0, 1.0)
        proj.append(Projection(factor=f, n=int(round(f * n_full)), value=iv.value,
                               ci_low=iv.ci_low, ci_high=iv.ci_high))

    # Checks: is there a signal above the noise, and does the power law describe it?
    problems = []
    noise = float(np.sqrt(np.mean(half ** 2)))  # pooled CI half-width
    rise = float(v[-1] - v[0])
    rise_lo = float(np.percentile(point_draws[:, -1] - point_draws[:, 0], 2.5)) if resampled is not None else None
    if rise < 0:
        problems.append(f"the {len(ok)} points fall by {-rise:.2f} from the smallest to the largest training "
                        f"set (noise ±{noise:.2f}): the curve does not rise, more data of this kind is unlikely "
                        "to help")
    elif rise_lo is not None:
        if rise_lo <= 0:
            problems.append(f"the {len(ok)} points rise by {rise:.2f}, but its 95% interval on the same test "
                            f"items reaches {rise_lo:.2f}: the curve may be flat, more data of this kind may not "
                            "help")
    elif rise <= noise:
        problems.append(f"the {len(ok)} points rise by {rise:.2f}, less than their ±{noise:.2f} noise: "
                        "the curve is flat, more data of this kind is unlikely to help")
    if b < B_NEAR_ZERO:
        problems.append(f"the fitted exponent b = {b:.3f} is near zero: error barely falls as data grows")
    span = float(v.max() - v.min())
    width = proj[0].ci_high - proj[0].ci_low
    if width > span:  # the extrapolation would tell less than the measured points already show
        problems.append(f"the 95% interval of the projection at 2x data ({proj[0].ci_low:.2f} to "
                        f"{proj[0].ci_high:.2f}) is wider than the {span:.2f} range the points cover: "
                        "the points are too noisy to extrapolate")
    rmse = float(np.sqrt(np.mean((_metric_at(p, x) - v) ** 2)))
    if rmse > float(half.mean()) + 1e-9:
        problems.append(f"the fit misses the points by {rmse:.3f} (RMSE), more than their ±{half.mean():.3f} "
                        "noise: the points do not follow a power law")
    if problems:
        curve.reason = "; ".join(problems)
        return curve

    curve.extrapolable = True
    curve.projections = proj
    curve.reason = (f"{len(ok)} points fit error = {curve.fit['A']:.3g}·n^-{b:.2f} + {e:.3f} (RMSE {rmse:.3f}, "
                    f"noise ±{half.mean():.3f}); projections carry 95% bootstrap intervals, and power-law "
                    "extrapolation tends to overshoot (Jain et al. 2023)")
    if target is not None:
        curve.target_reachable = target <= 1.0 - e
        if curve.target_reachable:
            draws = np.array([_n_for(pb, target, n0) for pb in boots_arr])
            curve.n_for_target = _interval(_n_for(p, target, n0), draws, 1.0, N_NEVER)
            if draws.size and np.mean(draws >= N_NEVER) > 0.025:
                curve.reason += (f"; in {np.mean(draws >= N_NEVER):.0%} of bootstrap refits the target "
                                 f"{target:.2f} is above the ceiling, so the upper bound of n is 'never'")
        else:
            curve.reason += (f"; the target {target:.2f} is above the fitted ceiling {1 - e:.2f}: "
                             "more data of this kind is not projected to reach it")
    return curve
