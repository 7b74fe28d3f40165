"""The drug-condition demo: free-text questions per drug, the reviews as a dated corpus."""

from __future__ import annotations

from tunewise.data.corpus import frozen_at, read_corpus
from tunewise.data.prepare import prepare
from tunewise.evidence.freshness import time_split
from tunewise.strategies.retrieval import names_document


def test_drug_condition_demo_questions_corpus_and_time_split():
    prep = prepare(None, demo="drug-condition")
    assert prep.task.type == "generation" and prep.task.metric == "token_f1" and prep.task.date_field == "date"
    records = prep.split.train + prep.split.test
    assert len(records) > 300 and len({r.doc for r in records}) == len(records)  # one question per drug
    r = records[0]
    assert r.messages[0][1] == f"Which condition is {r.doc} taken for?" and r.output and r.date
    docs = read_corpus(prep.task.corpus)
    assert all(d.date for d in docs) and any(names_document(r.doc, d.id) and r.output in d.text for d in docs)
    # drugs first reviewed after the cut-off exist only in the updated corpus
    _, after, cutoff = time_split(records)
    frozen = frozen_at(docs, cutoff)
    new = [x for x in after]
    assert new and not any(names_document(x.doc, d.id) for x in new for d in frozen)
    assert all(any(names_document(x.doc, d.id) for d in docs) for x in new)
