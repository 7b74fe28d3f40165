"""Number formatting for findings, so every sentence cites figures the same way: 0.83 [0.77, 0.89]."""

from __future__ import annotations

import math

from tunewise.results import Interval

_FRACTIONS = {2: "half", 3: "third", 4: "quarter", 5: "fifth", 6: "sixth", 7: "seventh",
              8: "eighth", 9: "ninth", 10: "tenth"}


def iv(x: Interval) -> str:
    """A score with its 95% interval."""
    return f"{x.value:.2f} [{x.ci_low:.2f}, {x.ci_high:.2f}]"


def count(n: float) -> str:
    """A count with thousands separators."""
    return f"{round(n):,}"


def count_iv(x: Interval) -> str:
    return f"{count(x.value)} [{count(x.ci_low)}, {count(x.ci_high)}]"


def p(p_value: float, alpha: float = 0.05) -> str:
    """'p = 0.03' or 'p < 0.001', with the test's level when it is not 5% (adaptive scoring's looks)."""
    text = "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"
    return text if alpha >= 0.0499 else f"{text} at level {alpha:.2g}"


def floor2(x: float) -> float:
    """Round down to two decimals, so a quoted threshold is still met by the number behind it."""
    return math.floor(x * 100 + 1e-9) / 100


def params(n: int | None) -> str:
    if not n:
        return "unknown size"
    return f"{n / 1e9:.1f}B params" if n >= 1e9 else f"{n / 1e6:.0f}M params"


def dollars(x: float) -> str:
    """$0.10, $0.0012: cents for sums of a cent or more, significant figures below."""
    return f"${x:.2f}" if x >= 0.01 or x == 0 else f"${x:.2g}"


def cost_ratio(cheap: float, dear: float) -> str:
    """'a fifth of the cost ($0.02 vs $0.10 per 1,000 requests)'."""
    money = f"({dollars(cheap)} vs {dollars(dear)} per 1,000 requests)"
    if cheap <= 0:
        return f"no per-request cost {money}"
    ratio = dear / cheap
    whole = round(ratio)
    if whole in _FRACTIONS and abs(ratio - whole) < 0.15:
        return f"a {_FRACTIONS[whole]} of the cost {money}"
    return f"{cheap / dear:.2g}x the cost {money}"
