"""The freshness test: every candidate trained/indexed on records up to a cut-off date and tested on
the records after it, against its score on the run's main split ("knowledge ageing").

The cut-off is the date that leaves the latest `TEST_SHARE` of the dated records after it. The drop
(main split minus time split) gets an interval from an unpaired bootstrap: the two test sets hold
different records. A `rag` candidate is also scored with its corpus frozen at the cut-off (documents
dated after it left out), beside the updated corpus, paired on the same time-split records.
"""

from __future__ import annotations

from tunewise.data.records import Record
from tunewise.data.split import subsample, test_order
from tunewise.evaluate.sequential import paired_test
from tunewise.evaluate.stats import unpaired_bootstrap
from tunewise.results import CandidateResult, Freshness, FreshnessRow, FrozenCorpus, Interval

TEST_SHARE = 0.2  # latest share of dated records tested after the cut-off
MIN_SIDE = 4  # dated records needed on each side of the cut-off
FROZEN_SUFFIX = "@frozen"


def time_split(records: list[Record], test_share: float = TEST_SHARE) -> tuple[list[Record], list[Record], str] | None:
    """(up to the cut-off, after it, the cut-off date) over the dated records; None when too few are dated
    or every record shares one date. Records on the cut-off date go before it."""
    dated = sorted((r for r in records if r.date), key=lambda r: r.date[:10])
    if len(dated) < 2 * MIN_SIDE:
        return None
    cutoff = dated[max(0, int(len(dated) * (1 - test_share)) - 1)].date[:10]  # the last record kept before
    before = [r for r in dated if r.date[:10] <= cutoff]
    after = [r for r in dated if r.date[:10] > cutoff]
    if len(after) < MIN_SIDE:  # many records on the cut-off date: move it one distinct date earlier
        earlier = sorted({r.date[:10] for r in dated if r.date[:10] < cutoff})
        if not earlier:
            return None
        cutoff = earlier[-1]
        before = [r for r in dated if r.date[:10] <= cutoff]
        after = [r for r in dated if r.date[:10] > cutoff]
    return (before, after, cutoff) if len(before) >= MIN_SIDE and len(after) >= MIN_SIDE else None


def plan(records: list[Record], train_limit: int | None, test_first: int | None, seed: int,
         classification: bool) -> tuple[list[Record], list[Record], str] | None:
    """The time split capped like the main run: (train, test in scoring order, cut-off)."""
    split = time_split(records)
    if split is None:
        return None
    before, after, cutoff = split
    train = subsample(before, train_limit, seed=seed, stratified=classification)
    test = test_order(after, test_first, seed=seed, stratified=classification)[:test_first or len(after)]
    return train, test, cutoff


def frozen_spec(spec, cutoff: str):
    """The rag candidate with its corpus frozen at the cut-off (`corpus_cutoff` option)."""
    return spec.model_copy(update={"name": spec.name + FROZEN_SUFFIX,
                                   "options": spec.options | {"corpus_cutoff": cutoff}})


def table(main: list[CandidateResult], timed: dict[str, CandidateResult], time_test: list[Record],
          main_test: list[Record], metric: str, labels: list[str] | None, cutoff: str, train_n: int,
          main_split: str, n_resamples: int, seed: int, leakage: dict[str, int]) -> Freshness:
    """Main-split vs time-split score per candidate, the drop with its interval, and rag frozen vs updated."""
    rows = []
    refs_time = [r.output for r in time_test]
    for c in main:
        t = timed.get(c.name)
        if c.status != "ok" or t is None or t.status != "ok" or metric not in c.metrics:
            rows.append(FreshnessRow(candidate=c.name, family=c.family, status="failed",
                                     error=(t.error if t is not None else None) or c.error or "not scored"))
            continue
        n_main = len(c.predictions)
        drop = unpaired_bootstrap(metric, c.predictions, [r.output for r in main_test[:n_main]],
                                  t.predictions, refs_time[:len(t.predictions)], labels, n_resamples, seed)
        rows.append(FreshnessRow(candidate=c.name, family=c.family, main=c.metrics[metric],
                                 time=t.metrics[metric], drop=Interval(**drop), main_records=n_main,
                                 time_records=len(t.predictions)))
    frozen = []
    for name, t in timed.items():
        if not name.endswith(FROZEN_SUFFIX):
            continue
        updated = timed.get(name.removesuffix(FROZEN_SUFFIX))
        if t.status != "ok" or updated is None or updated.status != "ok":
            continue
        n = min(len(t.predictions), len(updated.predictions))
        test = paired_test(metric, updated.predictions[:n], t.predictions[:n], refs_time[:n], labels, 0.05,
                           n_resamples, seed)
        frozen.append(FrozenCorpus(candidate=updated.name, frozen=t.metrics[metric], updated=updated.metrics[metric],
                                   gain=Interval(value=test["diff"], ci_low=test["ci_low"], ci_high=test["ci_high"]),
                                   p_value=test["p_value"], records=n))
    return Freshness(cutoff=cutoff, metric=metric, train_records=train_n, test_records=len(time_test),
                     main_split=main_split, rows=rows, frozen=frozen, leakage=leakage)
