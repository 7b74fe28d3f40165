"""The report: Markdown and HTML carry the verdict and evidence; the page is self-contained and renders."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tunewise.config import BUDGETS
from tunewise.report import plots, render_html, render_markdown, write_report
from tunewise.results import (
    AdaptiveScoring, ApiUse, BreakEven, CandidateCost, CandidateResult, ClassScore, Comparison, ComputeEstimate, Confusion,
    Cost, CurvePoint, EpochLoss, Forgetting, ForgettingEntry, Interval, LearningCurve, Look, Overfitting, Projection, Reason,
    RunResults, RunTask,
    Verdict,
)

REPO = Path(__file__).resolve().parents[1]
PLOT_IDS = ["plot-quality-cost", "plot-quality", "plot-learning-curve", "plot-latency", "plot-forgetting",
            "plot-confusion", "plot-losses"]
LABELS = ["billing", "cancel", "delivery", "refund", "technical"]
OOM = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB <device 0>"


def iv(v: float, half: float = 0.03) -> Interval:
    return Interval(value=v, ci_low=round(v - half, 4), ci_high=round(v + half, 4))


def cand(name, family, strategy, acc, f1, model=None, **kw) -> CandidateResult:
    per_class = {lab: ClassScore(precision=acc - 0.02 * i, recall=acc - 0.01 * i, f1=f1 - 0.015 * i, support=60 - 5 * i)
                 for i, lab in enumerate(LABELS)}
    matrix = [[50 if i == j else (3 if (i + j) % 2 else 1) for j in range(5)] for i in range(5)]
    return CandidateResult(name=name, family=family, strategy=strategy, model=model,
                           metrics={"accuracy": iv(acc), "macro_f1": iv(f1, 0.035)}, per_class=per_class,
                           confusion=Confusion(labels=LABELS, matrix=matrix), **kw)


def full_results() -> RunResults:
    qwen = "Qwen/Qwen2.5-0.5B-Instruct"
    candidates = [
        cand("majority_class", "classical", "majority", 0.212, 0.070, latency_ms={"p50": 0.01, "p95": 0.02}),
        cand("tfidf_logreg", "classical", "tfidf", 0.781, 0.764, latency_ms={"p50": 0.4, "p95": 0.9},
             train_seconds=2.1, settings={"C": 1.0, "ngram_range": [1, 2]}),
        cand("zero_shot", "prompting", "zero_shot", 0.603, 0.571, model=qwen, latency_ms={"p50": 210.0, "p95": 380.0},
             prompt_tokens_mean=142.0, output_tokens_mean=3.0, params=494_032_768),
        cand("retrieved_few_shot", "retrieval", "retrieved_few_shot", 0.742, 0.728, model=qwen,
             latency_ms={"p50": 320.0, "p95": 610.0}, prompt_tokens_mean=655.0, settings={"k": 4}),
        cand("lora", "finetune", "lora", 0.871, 0.862, model=qwen, latency_ms={"p50": 95.0, "p95": 170.0},
             prompt_tokens_mean=60.0, train_seconds=812.0, train_tokens=1_200_000, train_tokens_per_s=1478.0,
             peak_memory_mb=6120.0, params=494_032_768, trainable_params=4_399_104, artifact="runs/abc/lora",
             settings={"r": 16, "alpha": 32, "lr": 2e-4, "epochs": 2},
             losses=[EpochLoss(epoch=0.5, train_loss=1.42, val_loss=1.10), EpochLoss(epoch=1.0, train_loss=0.81, val_loss=0.74),
                     EpochLoss(epoch=1.5, train_loss=0.55, val_loss=0.61), EpochLoss(epoch=2.0, train_loss=0.43, val_loss=0.60)]),
        CandidateResult(name="lora_1.5b", family="finetune", strategy="lora", model="Qwen/Qwen2.5-1.5B-Instruct",
                        status="failed", error=OOM),
    ]
    curve = LearningCurve(
        candidate="lora", metric="accuracy", extrapolable=True, reason="4 points, fit R² 0.98",
        points=[CurvePoint(fraction=f, n=n, value=v, ci_low=v - 0.04, ci_high=v + 0.04)
                for f, n, v in [(0.125, 150, 0.62), (0.25, 300, 0.73), (0.5, 600, 0.81), (1.0, 1200, 0.871)]],
        fit={"A": 16.9, "b": 0.797, "E": 0.07},
        projections=[Projection(factor=2, n=2400, value=0.897, ci_low=0.874, ci_high=0.915),
                     Projection(factor=4, n=4800, value=0.912, ci_low=0.882, ci_high=0.934)],
        n_for_target=Interval(value=1500, ci_low=1100, ci_high=2300), target_reachable=True,
        ceiling=iv(0.93, 0.02))
    return RunResults(
        tunewise_version="0.1.0", run_id="20260301-abc123", created="2026-03-01T12:00:00Z",
        task={"name": "support-intents", "type": "classification", "metric": "accuracy", "target": 0.88,
              "labels": LABELS, "constraints": {"latency_ms_limit": 300.0, "monthly_requests": 2_000_000,
                                                "knowledge_update": "never", "on_premises": False}},
        budget=BUDGETS["standard"],
        split={"source": "seeded split, 20% held out", "seed": 13, "train": 1200, "test": 300},
        data={"source": "data/intents.jsonl", "hash": "9f2c", "skipped_count": 2},
        profile={"records": {"train": 1200, "test": 300}, "label_count": 5, "imbalance_ratio": 1.9,
                 "tokens": {"mean": 38.2, "p95": 91}, "duplicates": {"exact": 3},
                 "warnings": ["2 empty inputs skipped"]},
        candidates=candidates,
        comparisons=[Comparison(a="lora", b=b, metric="accuracy", diff=0.871 - v, ci_low=0.871 - v - 0.04,
                                ci_high=0.871 - v + 0.04, p_value=p, test="paired_bootstrap")
                     for b, v, p in [("tfidf_logreg", 0.781, 0.0004), ("retrieved_few_shot", 0.742, 0.0001)]],
        test_scoring=AdaptiveScoring(method="group-sequential", planned=[100, 200, 300], alphas=[0.0014, 0.012, 0.037],
                                     looks=[Look(n=100, alpha=0.0014, leader="lora", open=["tfidf_logreg"],
                                                 floor_separated=True),
                                            Look(n=200, alpha=0.012, leader="lora", dropped=["tfidf_logreg"],
                                                 floor_separated=True)],
                                     stop="separated", records={"lora": 200, "tfidf_logreg": 200, "zero_shot": 100}),
        learning_curve=curve,
        overfitting=[Overfitting(candidate="lora", epochs=candidates[4].losses, flag=False,
                                 reason="validation loss flat over the last epoch (0.61 -> 0.60)")],
        forgetting=Forgetting(probe="mmlu-mini", items=150, base_score=iv(0.452, 0.04), base_perplexity=9.81,
                              models=[ForgettingEntry(candidate="lora", score=iv(0.431, 0.04),
                                                      delta=Interval(value=-0.021, ci_low=-0.045, ci_high=0.004),
                                                      perplexity=10.4)]),
        compute=[ComputeEstimate(candidate="lora", params=494_032_768, trainable_params=4_399_104, tokens=2_400_000,
                                 flops=7.1e15, device_flops_per_s=1.2e13, estimated_seconds=590.0,
                                 measured_seconds=812.0, budget_seconds=3600.0)],
        cost=Cost(assumptions={"api_input_per_mtok": 0.15, "gpu_hour": 2.5, "cpu_hour": 0.1},
                  candidates=[CandidateCost(candidate=n, hosting=h, per_1k_requests=p, training_cost=t, monthly_cost=p * 2000)
                              for n, h, p, t in [("majority_class", "none", 0.0, 0.0), ("tfidf_logreg", "cpu", 0.0004, 0.0),
                                                 ("zero_shot", "api", 0.023, 0.0), ("retrieved_few_shot", "api", 0.1, 0.0),
                                                 ("lora", "gpu", 0.014, 0.56)]],
                  break_even=BreakEven(finetuned="lora", prompting="retrieved_few_shot", monthly_requests=6500.0,
                                       explanation="LoRA training ($0.56) is repaid after 6,500 requests.")),
        verdict=Verdict(decision="FINE_TUNE", candidate="lora", model=qwen,
                        summary="Fine-tune with LoRA: +9.0 points over TF-IDF and +12.9 over retrieved few-shot.",
                        reasons=[Reason(criterion="quality_gap", finding="lora beats tfidf_logreg by 0.090 [0.050, 0.130], p=0.0004.",
                                        vote="FINE_TUNE"),
                                 Reason(criterion="latency", finding="lora p95 170 ms is under the 300 ms limit.", vote=None),
                                 Reason(criterion="forgetting", finding="probe drop -0.021 [-0.045, 0.004] is not significant.")],
                        constraints=["p95 latency ≤ 300 ms", "compute within 1 h budget"],
                        would_change=["a 2x larger train set lifting tfidf_logreg above 0.85"]),
        environment={"python": "3.11.9", "torch": "2.13.0", "device": "cpu", "threads": 16},
    )


def minimal_results() -> RunResults:
    return RunResults(tunewise_version="0.1.0", run_id="min", created="2026-03-01T12:00:00Z",
                      task={"name": "tiny", "metric": "accuracy"}, budget=BUDGETS["quick"],
                      split={"train": 8, "test": 4, "source": "test file", "seed": 0},
                      candidates=[CandidateResult(name="majority_class", family="classical", strategy="majority",
                                                  metrics={"accuracy": iv(0.5)}),
                                  CandidateResult(name="zero_shot", family="prompting", strategy="zero_shot",
                                                  status="failed", error="model not found")])


def test_markdown_carries_verdict_candidates_and_numbers():
    md = render_markdown(full_results())
    assert md.index("FINE_TUNE") < md.index("## Candidates")
    for name in ["majority_class", "tfidf_logreg", "zero_shot", "retrieved_few_shot", "lora", "lora_1.5b"]:
        assert f"| {name} |" in md
    for text in ["0.871 [0.841, 0.901]", "`quality_gap`", "CUDA out of memory", "6,500 requests per month",
                 "+0.090", "mmlu-mini", "support-intents", "error = 16.900 · n^-0.797 + 0.070", "1,500 [1,100, 2,300]",
                 "$0.0140", "13.5 min", "imbalance_ratio", '"r": 16', "## Test scoring",
                 "Scored in 2 of 3 planned looks (100, 200, 300 records); stopped: separated",
                 "| 2 | 200 | 0.012 | lora | tfidf_logreg |"]:
        assert text in md, text


def test_api_candidates_show_model_method_tokens_cost_and_latency_side_by_side():
    r = full_results()
    served = r.candidate("zero_shot")
    served.model, served.scoring, served.unparsed = "openai:gpt-4o-mini", "generate", 3
    served.api = ApiUse(base_url="https://api.openai.com/v1", model="gpt-4o-mini", input_per_mtok=0.15,
                        output_per_mtok=0.6, requests=150)
    row = next(line for line in render_markdown(r).splitlines() if line.startswith("| zero_shot |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:5] == ["openai:gpt-4o-mini", "generate (HTTP), 3 unparsed", "ok"]
    assert ["210.0 / 380.0 ms", "142 / 3", "$0.0230"] == cells[8:11]  # after the test records and two metrics
    html = render_html(r)
    for text in ["generate (HTTP), 3 unparsed", "https://api.openai.com/v1", "142 / 3", "$0.0230", "210.0 / 380.0 ms"]:
        assert text in html, text


def test_html_has_every_plot_and_section():
    html = render_html(full_results())
    for pid in PLOT_IDS:
        assert f'<figure id="{pid}">' in html
        assert f"{pid}-absent" not in html
    assert html.index("FINE_TUNE") < html.index('id="candidates"')
    assert "not measured in this run" not in html
    assert "Qwen/Qwen2.5-0.5B-Instruct" in html and "mmlu-mini" in html and "imbalance_ratio" in html
    assert 'id="test-scoring"' in html and "stopped: separated" in html and "zero_shot 100" in html


def test_html_minimal_results_notes_absent_evidence():
    html = render_html(minimal_results())
    assert '<figure id="plot-quality">' in html
    for pid in PLOT_IDS[2:] + ["plot-quality-cost"]:
        assert f'<figure id="{pid}">' not in html and f'id="{pid}-absent"' in html
    assert "No verdict" in html and "not measured in this run" in html
    md = render_markdown(minimal_results())
    assert "No verdict" in md and "not measured in this run" in md and "model not found" in md


def test_html_is_self_contained_and_escaped():
    html = render_html(full_results())
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<script" not in html.lower() and "@import" not in html
    assert "CUDA out of memory" in html and "&lt;device 0&gt;" in html and "<device 0>" not in html
    assert re.search(r'class="error">RuntimeError: CUDA out of memory', html)


def test_plot_ids_are_unique_across_figures():
    html = render_html(full_results())
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))


def test_plots_are_deterministic_and_none_without_evidence():
    r = full_results()
    assert plots.learning_curve(r) == plots.learning_curve(r)
    assert plots.quality_vs_cost(r).startswith("<svg")
    m = minimal_results()
    assert [name for name, f in plots.ALL_PLOTS.items() if f(m) is not None] == ["plot-quality"]


def test_confusion_caps_labels():
    r = full_results()
    labels = [f"label_{i:02d}" for i in range(40)]
    matrix = [[(5 if i == j else 1) + (40 - i) for j in range(40)] for i in range(40)]
    r.candidates[4].confusion = Confusion(labels=labels, matrix=matrix)
    svg = plots.confusion(r)
    assert "showing 30 of 40 labels" in render_html(r)
    assert svg is not None


def test_write_report(tmp_path):
    paths = write_report(full_results(), tmp_path / "out")
    assert set(paths) == {"html", "markdown", "json"}
    assert all(p.is_file() for p in paths.values())
    assert RunResults.model_validate_json(paths["json"].read_text()).verdict.decision == "FINE_TUNE"


def _chromium() -> str:
    found = shutil.which("chromium") or (Path("/usr/bin/chromium").is_file() and "/usr/bin/chromium")
    if found:
        return found
    allowed = os.environ.get("CI") == "true" or os.environ.get("TUNEWISE_INSTALL_CHROMIUM") == "1"
    if allowed and hasattr(os, "geteuid") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=600)
        found = shutil.which("chromium")
        if found:
            return found
    pytest.skip("chromium not installed (as root, set CI=true or TUNEWISE_INSTALL_CHROMIUM=1 to install it)")


def test_report_renders_in_chromium(tmp_path):
    browser = _chromium()
    html = write_report(full_results(), tmp_path / "run")["html"]
    shot = REPO / "test-artifacts" / "report.png"
    shot.parent.mkdir(exist_ok=True)
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--enable-logging=stderr", "--v=0"]
    url = html.resolve().as_uri()
    dom = subprocess.run(base + [f"--user-data-dir={tmp_path / 'p1'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "FINE_TUNE" in dom.stdout
    for pid in PLOT_IDS:
        assert f'id="{pid}"' in dom.stdout, pid
    png = subprocess.run(base + [f"--user-data-dir={tmp_path / 'p2'}", f"--screenshot={shot}",
                                 "--window-size=1280,4000", url], capture_output=True, text=True, timeout=60)
    assert png.returncode == 0, png.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 10_000
    console = [line for line in (dom.stderr + png.stderr).splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console


def test_partial_evidence_is_reported_not_crashed():
    r = full_results()
    lc = r.learning_curve
    lc.extrapolable, lc.reason, lc.fit, lc.projections, lc.n_for_target = False, "only 2 points succeeded", None, [], None
    lc.points[0].status, lc.points[0].error = "failed", "OOM at fraction 0.125"
    r.cost.break_even = None
    r.verdict = Verdict(decision="INSUFFICIENT_EVIDENCE", summary="Too few points.", reasons=[])
    r.task = RunTask(name="partial")  # no target or constraints (the metric is always set: its default)
    html, md = render_html(r), render_markdown(r)
    assert "Not extrapolable: only 2 points succeeded" in html and "OOM at fraction 0.125" in html
    assert '<figure id="plot-learning-curve">' in html
    assert "Break-even: not measured in this run" in html and "INSUFFICIENT_EVIDENCE" in md


def test_retrieval_recall_at_k_is_in_both_reports_with_its_k():
    r = minimal_results()
    r.candidates += [CandidateResult(name="rag", family="retrieval", strategy="rag", metrics={"accuracy": iv(0.6)},
                                     settings={"top_k": 3}, retrieval_recall=iv(0.8, 0.1), retrieval_records=40),
                     CandidateResult(name="rag_lora", family="retrieval", strategy="rag_lora",
                                     metrics={"accuracy": iv(0.7)}, settings={"top_k": 3})]
    md = render_markdown(r)
    assert "## Retrieval recall@k" in md and "| rag | 3 | 0.800 [0.700, 0.900] | 40 |" in md
    assert "Recall@k not measured for rag_lora: no test record names its source document" in md
    html = render_html(r)
    assert 'id="retrieval"' in html and "0.800 [0.700, 0.900]" in html and "top-k passages" in html
    assert "not measured for rag_lora" in html
    assert "Retrieval recall@k" not in render_markdown(minimal_results())  # no retrieval candidate: no section
