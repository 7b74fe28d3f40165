"""The freshness test: the time split, its leakage guarantees, the ageing table and the verdict on it."""

from __future__ import annotations

import json

import pytest

from tunewise.data.corpus import frozen_at, read_corpus
from tunewise.data.records import Record
from tunewise.decide import decide
from tunewise.evaluate.stats import unpaired_bootstrap
from tunewise.evidence.freshness import frozen_spec, plan, table, time_split
from tunewise.results import CandidateResult, Freshness, FreshnessRow, Interval
from tunewise.strategies import CandidateSpec, build

from test_decide import cmp, cost, demo, demo_candidates, run


def rec(i, date):
    return Record(id=f"r{i}", messages=(("user", f"q{i}"),), output="a" if i % 2 else "b", source="m", line=i,
                  date=date)


RECORDS = [rec(i, f"20{10 + i // 12:02d}-{1 + i % 12:02d}-15") for i in range(60)] + [rec(99, None)]


def test_time_split_puts_the_latest_records_after_the_cutoff():
    before, after, cutoff = time_split(RECORDS)
    assert len(after) == 12 and len(before) == 48  # the latest fifth; the undated record is left out
    assert max(r.date for r in before)[:10] <= cutoff < min(r.date for r in after)[:10]
    assert time_split(RECORDS[:5]) is None  # too few dated records
    same_day = [rec(i, "2015-01-01") for i in range(20)]
    assert time_split(same_day) is None  # one date: nothing is after any cut-off


def test_no_training_or_index_record_after_the_cutoff_in_the_frozen_condition(tmp_path):
    train, test, cutoff = plan(RECORDS, train_limit=30, test_first=8, seed=0, classification=True)
    assert len(train) == 30 and len(test) == 8
    assert all(r.date[:10] <= cutoff for r in train) and all(r.date[:10] > cutoff for r in test)
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": r.id, "text": f"doc {r.id}", "date": r.date}) + "\n"
                              for r in RECORDS))
    spec = frozen_spec(CandidateSpec(name="rag", strategy="rag", options={"corpus": str(corpus)}), cutoff)
    assert spec.name == "rag@frozen"
    indexed = build(spec).docs  # what the frozen rag indexes
    assert indexed and all(d.date is None or d.date[:10] <= cutoff for d in indexed)
    assert len(indexed) < len(read_corpus(corpus)) == len(frozen_at(read_corpus(corpus), "2100-01-01"))
    assert build(spec).settings()["corpus_hash"] != build(CandidateSpec(
        name="rag", strategy="rag", options={"corpus": str(corpus)})).settings()["corpus_hash"]


def test_unpaired_drop_interval():
    refs = ["a"] * 100
    good, bad = ["a"] * 90 + ["b"] * 10, ["a"] * 50 + ["b"] * 50
    d = unpaired_bootstrap("accuracy", good, refs, bad, refs, n_resamples=500)
    assert d["value"] == pytest.approx(0.4) and 0.25 < d["ci_low"] < 0.4 < d["ci_high"] < 0.55


def _result(name, family, preds, refs):
    from tunewise.evaluate.stats import bootstrap_ci

    c = CandidateResult(name=name, family=family, strategy=name.split("@")[0],
                        metrics={"accuracy": Interval(**bootstrap_ci("accuracy", preds, refs, n_resamples=200))})
    c.predictions = preds
    return c


def test_table_has_drops_and_the_frozen_corpus_comparison():
    main_test = [rec(i, "2010-01-01") for i in range(40)]
    time_test = [rec(100 + i, "2020-01-01") for i in range(40)]
    mrefs, trefs = [r.output for r in main_test], [r.output for r in time_test]
    wrong = {"a": "b", "b": "a"}
    main = [_result("lora", "finetune", mrefs, mrefs), _result("rag", "retrieval", mrefs, mrefs)]
    timed = {"lora": _result("lora", "finetune", [wrong[x] if i % 2 else x for i, x in enumerate(trefs)], trefs),
             "rag": _result("rag", "retrieval", trefs, trefs),
             "rag@frozen": _result("rag@frozen", "retrieval", [wrong[x] if i % 3 else x for i, x in enumerate(trefs)],
                                   trefs)}
    fr = table(main, timed, time_test, main_test, "accuracy", None, "2015-01-01", 30, "seeded split", 200, 0,
               {"training records after the cut-off": 0})
    lora, rag = fr.row("lora"), fr.row("rag")
    assert lora.drop.value == pytest.approx(0.5) and lora.drop.ci_low > 0
    assert rag.drop.value == 0
    assert fr.frozen[0].candidate == "rag" and fr.frozen[0].gain.value > 0.5 and fr.frozen[0].p_value < 0.01


def _aged(lora_time=(0.55, 0.45, 0.65), rag_time=(0.72, 0.65, 0.79), knowledge="monthly"):
    cands = demo_candidates() + [CandidateResult(name="rag", family="retrieval", strategy="rag",
                                                 metrics={"accuracy": Interval(value=0.74, ci_low=0.69,
                                                                               ci_high=0.79)})]
    r = demo(candidates=cands, knowledge=knowledge,
             cost_=cost(classical=0.001, zero_shot=0.02, few_shot=0.05, knn_few_shot=0.06, lora=0.10, rag=0.08))
    r.comparisons += [cmp("rag", "majority", 0.09, 0.001), cmp("lora", "rag", 0.09, 0.001)]

    def row(name, fam, main, time):
        m, t = Interval(value=main[0], ci_low=main[1], ci_high=main[2]), Interval(value=time[0], ci_low=time[1],
                                                                                    ci_high=time[2])
        d = Interval(value=m.value - t.value, ci_low=m.value - t.value - 0.1, ci_high=m.value - t.value + 0.1)
        return FreshnessRow(candidate=name, family=fam, main=m, time=t, drop=d)

    r.freshness = Freshness(cutoff="2016-01-01", metric="accuracy", train_records=300, test_records=100,
                            main_split="seeded split", rows=[row("lora", "finetune", (0.83, 0.77, 0.89), lora_time),
                                                             row("rag", "retrieval", (0.74, 0.69, 0.79), rag_time)])
    return r


def test_measured_ageing_turns_a_fine_tune_win_into_retrieval_naming_the_rag_candidate():
    v = decide(_aged(), None, None)
    assert v.decision == "RETRIEVAL" and v.candidate == "rag"
    assert "measured knowledge ageing" in v.summary and "2016-01-01" in v.summary and "drop 0.28" in v.summary
    fresh = next(r for r in v.reasons if r.criterion == "realtime_updates")
    assert fresh.vote == "RETRIEVAL" and "lora" in fresh.finding.lower() and "rag" in fresh.finding
    assert any("kept its score after the cut-off" in w for w in v.would_change)


def test_no_measured_ageing_keeps_the_winner_even_with_frequent_updates_declared():
    v = decide(_aged(lora_time=(0.82, 0.76, 0.88), knowledge="daily"), None, None)
    assert v.decision == "FINE_TUNE" and "no significant knowledge ageing" in v.summary
    assert any("significant drop after the time split" in w for w in v.would_change)


def test_ageing_with_knowledge_that_never_changes_keeps_the_winner_and_says_so():
    v = decide(_aged(knowledge="never"), None, None)
    assert v.decision == "FINE_TUNE" and "never changes" in v.summary


def test_ageing_without_a_better_retrieval_option_says_retrain():
    v = decide(_aged(rag_time=(0.40, 0.30, 0.50)), None, None)
    assert v.decision == "FINE_TUNE" and "retrain" in v.summary


def test_reports_show_the_ageing_table():
    from tunewise.report.html import render_html
    from tunewise.report.markdown import render_markdown

    r = _aged()
    r.verdict = decide(r, None, None)
    md, page = render_markdown(r), render_html(r)
    for text in (md, page):
        assert "Knowledge ageing (time split)" in text and "2016-01-01" in text and "+0.280" in text
