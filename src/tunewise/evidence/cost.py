"""Serving and training cost per candidate, and the monthly volume at which fine-tuning pays off."""

from __future__ import annotations

from typing import Literal

from tunewise.config import Prices
from tunewise.results import BreakEven, CandidateCost

HORIZON_MONTHS = 12

DEFAULT_ASSUMPTIONS: dict = {
    "api": "API requests are billed per token: prompt tokens at the input price, output tokens at the "
           "output price (dollars per million tokens), as the server's `usage` reported them, at each served "
           "model's own prices (models: in the task file), else the task's api prices. Likelihood scoring over "
           "/v1/completions sends one prompt per label, so its tokens bound a one-answer deployment from above.",
    "self_hosted": "A self-hosted model serves one request at a time, so each request keeps the box busy for "
                   "its mean latency and costs latency/3600 x the hourly price (cpu_hour or gpu_hour); "
                   "batching would lower this, idle time would raise it.",
    "none": "Candidates without a language model (e.g. classical) are priced as CPU hosting.",
    "training": "Training is a one-time cost: training seconds/3600 x the hourly price of the training "
                "device; it is not included in monthly cost.",
    "break_even": f"Fine-tuning's one-time training cost is amortised over {HORIZON_MONTHS} months when "
                  "comparing it with prompting.",
}


def _money(x: float) -> str:
    return f"${x:,.2f}" if abs(x) >= 0.1 or x == 0 else f"${x:.2g}"


def _sig2(x: float) -> str:
    return f"{float(f'{x:.2g}'):,.0f}" if x >= 10 else f"{x:.2g}"


def candidate_cost(candidate: str, hosting: Literal["api", "cpu", "gpu", "none"],
                   prompt_tokens_mean: float | None, output_tokens_mean: float | None,
                   latency_s_mean: float | None, training_seconds: float | None, prices: Prices,
                   monthly_requests: int | None, train_on: Literal["cpu", "gpu"] = "cpu") -> CandidateCost:
    """Cost per 1,000 requests, one-time training cost and monthly serving cost (see DEFAULT_ASSUMPTIONS)."""
    if hosting == "api":
        if prompt_tokens_mean is None or output_tokens_mean is None:
            raise ValueError(f"{candidate}: API pricing needs prompt and output token means")
        per_1k = 1000 * (prompt_tokens_mean * prices.api_input_per_mtok
                         + output_tokens_mean * prices.api_output_per_mtok) / 1e6
    elif hosting in ("cpu", "gpu", "none"):
        if latency_s_mean is None:
            raise ValueError(f"{candidate}: self-hosted pricing needs the mean latency")
        hour = prices.gpu_hour if hosting == "gpu" else prices.cpu_hour
        per_1k = 1000 * latency_s_mean / 3600 * hour
    else:
        raise ValueError(f"{candidate}: unknown hosting {hosting!r}")
    train_hour = prices.gpu_hour if train_on == "gpu" else prices.cpu_hour
    training = (training_seconds or 0.0) / 3600 * train_hour
    monthly = None if monthly_requests is None else per_1k * monthly_requests / 1000
    return CandidateCost(candidate=candidate, hosting=hosting, per_1k_requests=per_1k,
                         training_cost=training, monthly_cost=monthly)


def break_even(finetuned: CandidateCost, prompting: CandidateCost) -> BreakEven:
    """Monthly volume V above which fine-tuning is cheaper: V = (training / 12) / (saving per request).

    Training is amortised over HORIZON_MONTHS; None when the fine-tuned model is not cheaper per request.
    """
    saving = prompting.per_1k_requests - finetuned.per_1k_requests
    if saving <= 0:
        return BreakEven(finetuned=finetuned.candidate, prompting=prompting.candidate, monthly_requests=None,
                         explanation=(f"{finetuned.candidate} costs {_money(finetuned.per_1k_requests)} per 1,000 "
                                      f"requests, no less than {prompting.candidate}'s "
                                      f"{_money(prompting.per_1k_requests)}, so fine-tuning never pays off on cost"))
    volume = (finetuned.training_cost / HORIZON_MONTHS) / (saving / 1000)
    above = f"above {_sig2(volume)} requests/month" if volume > 0 else "from the first request"
    return BreakEven(finetuned=finetuned.candidate, prompting=prompting.candidate, monthly_requests=volume,
                     explanation=(f"fine-tuning costs {_money(finetuned.training_cost)} once; it saves "
                                  f"{_money(saving)} per 1,000 requests, so it pays off {above} "
                                  f"over a {HORIZON_MONTHS}-month horizon"))
