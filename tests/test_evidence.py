"""Evidence: learning-curve fit, overfitting flag, compute and cost arithmetic (hand-checked numbers)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from tunewise.config import Prices
from tunewise.evidence import (
    DEFAULT_ASSUMPTIONS, break_even, candidate_cost, detect_overfitting, estimate_compute, fit_learning_curve,
    measure_device_flops, training_flops,
)
from tunewise.results import CandidateCost, CurvePoint, EpochLoss

NS = [50, 100, 200, 400, 800]


def power_points(ns=NS, a=2.0, b=0.5, e=0.1, half=0.02, noise=0.0, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for n in ns:
        v = 1 - (a * n ** -b + e) + rng.normal(0, noise)
        out.append(CurvePoint(fraction=n / ns[-1], n=n, value=v, ci_low=v - half, ci_high=v + half))
    return out


# ---- learning curve -------------------------------------------------------------------------------


def test_curve_recovers_noiseless_power_law_and_projects():
    c = fit_learning_curve(power_points(), "accuracy", "lora", target=0.85, n_full=800, n_boot=300)
    assert c.extrapolable, c.reason
    assert c.fit["A"] == pytest.approx(2.0, rel=1e-3)
    assert c.fit["b"] == pytest.approx(0.5, abs=1e-3)
    assert c.fit["E"] == pytest.approx(0.1, abs=1e-3)
    assert c.ceiling.value == pytest.approx(0.9, abs=1e-3)
    # 2x: n=1600, 1 - (2/40 + 0.1) = 0.85; 4x: n=3200, 1 - (2/sqrt(3200) + 0.1) = 0.864645
    p2, p4 = c.projections
    assert (p2.factor, p2.n, p4.factor, p4.n) == (2.0, 1600, 4.0, 3200)
    assert p2.value == pytest.approx(0.85, abs=1e-3)
    assert p4.value == pytest.approx(0.864645, abs=1e-3)
    for p in c.projections:
        assert 0 <= p.ci_low <= p.value <= p.ci_high <= 1
    # target 0.85 is met where 2/sqrt(n) = 0.05, i.e. n = 1600
    assert c.target_reachable is True
    assert c.n_for_target.value == pytest.approx(1600, rel=1e-2)
    assert c.n_for_target.ci_low <= 1600 <= c.n_for_target.ci_high
    assert "Jain" in c.reason


def test_curve_recovers_lightly_noisy_power_law():
    c = fit_learning_curve(power_points(noise=0.003, seed=7), "accuracy", "lora", target=None, n_full=800,
                           n_boot=300)
    assert c.extrapolable, c.reason
    assert c.fit["b"] == pytest.approx(0.5, abs=0.15)
    assert c.fit["E"] == pytest.approx(0.1, abs=0.04)
    assert c.projections[0].value == pytest.approx(0.85, abs=0.02)
    assert c.projections[0].ci_low <= 0.85 <= c.projections[0].ci_high
    assert c.target_reachable is None and c.n_for_target is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curve_pure_noise_is_not_extrapolable(seed):
    rng = np.random.default_rng(seed)
    pts = []
    for n in NS:
        v = 0.5 + rng.normal(0, 0.03)
        pts.append(CurvePoint(fraction=n / 800, n=n, value=v, ci_low=v - 0.05, ci_high=v + 0.05))
    c = fit_learning_curve(pts, "accuracy", "lora", target=0.8, n_full=800, n_boot=200)
    assert not c.extrapolable
    assert c.projections == [] and c.n_for_target is None and c.target_reachable is None
    assert c.reason


def test_curve_flat_reason_cites_rise_and_noise():
    pts = [CurvePoint(fraction=n / 800, n=n, value=0.70 + 0.0025 * i, ci_low=0.66 + 0.0025 * i,
                      ci_high=0.74 + 0.0025 * i) for i, n in enumerate(NS[:4])]
    c = fit_learning_curve(pts, "accuracy", "lora", target=None, n_full=400, n_boot=100)
    assert not c.extrapolable
    assert "rise by 0.01" in c.reason and "±0.04" in c.reason and "flat" in c.reason


def test_curve_needs_four_ok_points():
    pts = power_points()
    pts[1] = pts[1].model_copy(update={"status": "failed", "error": "OOM"})
    pts[3] = pts[3].model_copy(update={"status": "failed", "error": "OOM"})
    c = fit_learning_curve(pts, "accuracy", "lora", target=0.8, n_full=800, n_boot=50)
    assert not c.extrapolable and c.fit is None and c.projections == []
    assert "only 3" in c.reason
    c3 = fit_learning_curve(power_points(ns=[100, 200, 400]), "accuracy", "lora", None, 400, n_boot=50)
    assert not c3.extrapolable and c3.fit is None


def test_curve_target_above_ceiling_not_reachable():
    c = fit_learning_curve(power_points(), "accuracy", "lora", target=0.95, n_full=800, n_boot=200)
    assert c.extrapolable
    assert c.target_reachable is False and c.n_for_target is None
    assert "ceiling" in c.reason


def _scored_points(accs, ns, u):
    """Curve points scored on shared test items: item i is right for a system when u[i] < its accuracy."""
    from tunewise.evaluate.stats import bootstrap_ci

    preds = [["y" if x < a else "n" for x in u] for a in accs]
    refs = ["y"] * len(u)
    pts = [CurvePoint(fraction=n / ns[-1], n=n, **bootstrap_ci("accuracy", p, refs, n_resamples=500))
           for n, p in zip(ns, preds)]
    return pts, preds, refs


def test_curve_joint_resampling_keeps_correlation_and_narrows_the_projection():
    from tunewise.evaluate.stats import joint_resamples

    ns = [60, 120, 240, 480]
    accs = [1 - (2.0 * n ** -0.5 + 0.1) for n in ns]  # 0.64, 0.72, 0.77, 0.81
    u = np.random.default_rng(3).uniform(size=380)
    pts, preds, refs = _scored_points(accs, ns, u)
    joint = fit_learning_curve(pts, "accuracy", "lora", None, n_full=480, n_boot=400,
                               resampled=joint_resamples("accuracy", preds, refs, n_resamples=400))
    independent = fit_learning_curve(pts, "accuracy", "lora", None, n_full=480, n_boot=400)
    assert joint.extrapolable, joint.reason
    width = lambda c: c.projections[0].ci_high - c.projections[0].ci_low  # noqa: E731
    assert not independent.extrapolable or width(joint) < width(independent)
    assert joint.projections[0].ci_low <= 1 - (2.0 * 960 ** -0.5 + 0.1) + 0.02


def test_curve_joint_resampling_flags_independent_noise():
    from tunewise.evaluate.stats import joint_resamples

    rng = np.random.default_rng(5)
    ns = [60, 120, 240, 480]
    preds = [["y" if x < 0.7 else "n" for x in rng.uniform(size=300)] for _ in ns]
    refs = ["y"] * 300
    from tunewise.evaluate.stats import bootstrap_ci

    pts = [CurvePoint(fraction=n / 480, n=n, **bootstrap_ci("accuracy", p, refs, n_resamples=300))
           for n, p in zip(ns, preds)]
    c = fit_learning_curve(pts, "accuracy", "lora", 0.8, n_full=480, n_boot=300,
                           resampled=joint_resamples("accuracy", preds, refs, n_resamples=300))
    assert not c.extrapolable and c.projections == []


# ---- overfitting -----------------------------------------------------------------------------------


def _losses(train, val):
    return [EpochLoss(epoch=i + 1, train_loss=t, val_loss=v) for i, (t, v) in enumerate(zip(train, val))]


def test_overfit_val_rise_while_train_falls():
    o = detect_overfitting("lora", _losses([1.0, 0.6, 0.4, 0.25], [0.9, 0.7, 0.75, 0.85]))
    assert o.flag
    # min 0.700 at epoch 2, worst later 0.850 at epoch 4: +21%, train 0.600 -> 0.250
    assert "0.700 at epoch 2" in o.reason and "0.850 at epoch 4" in o.reason and "+21%" in o.reason


def test_overfit_large_final_gap():
    o = detect_overfitting("lora", _losses([1.0, 0.5, 0.2], [1.0, 0.9, 0.8]))
    assert o.flag
    assert "0.200" in o.reason and "75%" in o.reason and "0.800" in o.reason  # 1 - 0.2/0.8 = 75%


def test_no_overfit_on_monotone_losses_or_small_wiggle():
    assert not detect_overfitting("lora", _losses([1.0, 0.8, 0.6], [1.0, 0.85, 0.7])).flag
    # +1.4% after the minimum is under the 2% threshold
    assert not detect_overfitting("lora", _losses([1.0, 0.8, 0.6], [1.0, 0.70, 0.71])).flag
    o = detect_overfitting("lora", [EpochLoss(epoch=1, train_loss=1.0)])
    assert not o.flag and "cannot be checked" in o.reason


# ---- compute ---------------------------------------------------------------------------------------


def test_training_flops_and_estimate():
    # 1e9 params x 1e6 tokens: LoRA 4 x 1e15 = 4e15, full 6 x 1e15 = 6e15
    assert training_flops(1_000_000_000, 1_000_000, "lora") == 4e15
    assert training_flops(1_000_000_000, 1_000_000, "full") == 6e15
    # adapters in the top half only: forward 2N + backward through half the layers 2N x 0.5 = 3N
    assert training_flops(1_000_000_000, 1_000_000, "lora", layers_share=0.5) == 3e15
    assert training_flops(1_000_000_000, 1_000_000, "full", layers_share=0.5) == 6e15
    with pytest.raises(ValueError):
        training_flops(1, 1, "lora", layers_share=0.0)
    # 4e15 / (1e12 FLOP/s x 0.4) = 10,000 s
    est = estimate_compute("lora", 1_000_000_000, 2_000_000, 1_000_000, "lora", 1e12, 0.4, budget_seconds=3600)
    assert est.flops == 4e15 and est.estimated_seconds == pytest.approx(10_000)
    assert not est.within_budget
    assert estimate_compute("lora", 10**9, 2 * 10**6, 10**6, "lora", 1e12, 0.4, None).within_budget
    with pytest.raises(ValueError):
        training_flops(1, 1, "qlora")


def test_estimate_scales_with_the_device_rate_now_and_adds_the_fixed_overhead():
    from tunewise.evidence.measure import compute_estimate

    cal = {"device_flops_per_s": 1e12, "efficiency": 0.4, "overhead_seconds": 30.0, "basis": "calibration"}
    idle = compute_estimate("lora", "lora", 10**9, 10**6, 10**6, cal, None, 1.0)
    busy = compute_estimate("lora", "lora", 10**9, 10**6, 10**6, cal, None, 1.0, peak_now=0.5e12)
    assert idle.estimated_seconds == pytest.approx(30 + 10_000)
    assert busy.estimated_seconds == pytest.approx(30 + 20_000)  # half the matmul rate now: twice the time
    assert idle.basis == "calibration"


def test_a_stale_or_old_format_calibration_is_measured_again():
    from tunewise.evidence.measure import STALE_SECONDS, stale

    now = 1_000_000_000.0
    fresh = {"created": now - 3600, "overhead_seconds": 1.0, "efficiency": 0.3}
    assert stale(fresh, now) is None
    assert "days old" in stale(fresh | {"created": now - STALE_SECONDS - 1}, now)
    assert stale({"efficiency": 0.3, "device_flops_per_s": 1e11}, now) == "stored by an older tunewise"


def test_the_calibration_rate_leaves_out_stalled_repeats():
    """Repeats measured beside a busy torch process (2 cores): two of three stalled 16x."""
    from tunewise.evidence.measure import steady_rate

    assert steady_rate([0.855, 0.053, 0.0495]) == pytest.approx(0.855)  # the plain median: 0.053
    assert steady_rate([0.047, 0.661, 0.648]) == pytest.approx(0.6545)
    assert steady_rate([0.70, 0.66, 0.68]) == pytest.approx(0.68)  # none stalled: the median


def test_a_measured_training_replaces_the_calibration_and_a_far_off_one_is_said(monkeypatch):
    from tunewise.evidence import measure

    monkeypatch.setattr(measure, "device_peak", lambda device: 1e11)
    cal = {"device_flops_per_s": 1e11, "efficiency": 0.5, "overhead_seconds": 2.0, "created": 0.0}
    # 1e8 params x 1e5 tokens x 4 = 4e13 FLOPs in 1,000 s of steps: 4e10 FLOP/s = 0.4 of the peak
    updated, notes = measure.refreshed(cal, [("lora", 10**8, 10**5, 1000.0, 1010.0)], "cpu", 1.0)
    assert updated["efficiency"] == pytest.approx(0.4) and updated["overhead_seconds"] == pytest.approx(10.0)
    assert updated["basis"].startswith("measured: lora") and not notes  # 0.8x: within 2x, replaced quietly
    updated, notes = measure.refreshed(cal, [("lora", 10**8, 10**5, 8000.0, 8000.0)], "cpu", 1.0)
    assert updated["efficiency"] == pytest.approx(0.05) and "0.1x the calibrated rate" in notes[0]


def test_measure_device_flops_quick():
    t = time.perf_counter()
    flops = measure_device_flops("cpu", seconds=0.2)
    assert flops > 1e9
    assert time.perf_counter() - t < 30  # generous: CI machines may be busy


def test_package_import_does_not_load_torch():
    code = "import sys, tunewise.evidence; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---- cost ------------------------------------------------------------------------------------------


def test_candidate_cost_arithmetic():
    prices = Prices()  # in $0.15/M, out $0.60/M, cpu $0.10/h, gpu $2.50/h
    # API: 1000 x (400 x 0.15 + 10 x 0.60) / 1e6 = 1000 x 66e-6 = $0.066 per 1k; 100k/month = $6.60
    api = candidate_cost("few_shot", "api", 400, 10, 0.8, 0, prices, 100_000)
    assert api.per_1k_requests == pytest.approx(0.066)
    assert api.monthly_cost == pytest.approx(6.6)
    assert api.training_cost == 0
    # CPU: 1000 x 0.36 s / 3600 x $0.10 = $0.01 per 1k; training 1800 s on CPU = 0.5 h x $0.10 = $0.05
    cpu = candidate_cost("lora", "cpu", 400, 10, 0.36, 1800, prices, None)
    assert cpu.per_1k_requests == pytest.approx(0.01)
    assert cpu.training_cost == pytest.approx(0.05)
    assert cpu.monthly_cost is None
    # GPU: 1000 x 0.36 / 3600 x $2.50 = $0.25 per 1k; training 1800 s on GPU = 0.5 h x $2.50 = $1.25
    gpu = candidate_cost("lora", "gpu", None, None, 0.36, 1800, prices, 1000, train_on="gpu")
    assert gpu.per_1k_requests == pytest.approx(0.25) and gpu.training_cost == pytest.approx(1.25)
    assert gpu.monthly_cost == pytest.approx(0.25)
    # "none" (classical) is priced like CPU
    none = candidate_cost("tfidf", "none", None, None, 0.036, 0, prices, None)
    assert none.per_1k_requests == pytest.approx(0.001)
    assert {"api", "self_hosted", "training", "break_even"} <= set(DEFAULT_ASSUMPTIONS)


def test_break_even_hand_case_and_never():
    ft = CandidateCost(candidate="lora", hosting="cpu", per_1k_requests=0.001, training_cost=0.04)
    pr = CandidateCost(candidate="few_shot", hosting="api", per_1k_requests=0.003, training_cost=0.0)
    be = break_even(ft, pr)
    # (0.04 / 12) / (0.002 / 1000) = 0.0033333 / 0.000002 = 1666.67 requests/month
    assert be.monthly_requests == pytest.approx(1666.667, rel=1e-4)
    assert be.explanation == ("fine-tuning costs $0.04 once; it saves $0.002 per 1,000 requests, so it pays off "
                              "above 1,700 requests/month over a 12-month horizon")
    dear = CandidateCost(candidate="lora", hosting="gpu", per_1k_requests=0.25, training_cost=1.25)
    never = break_even(dear, pr)
    assert never.monthly_requests is None and "never pays off" in never.explanation
