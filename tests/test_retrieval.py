"""Retrieval: the corpus read and chunked, the index (numpy vs FAISS), and the rag candidate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tunewise.config import BUDGETS, RetrievalSettings, TaskSpec
from tunewise.data.corpus import Document, chunk, corpus_hash, frozen_at, read_corpus
from tunewise.data.records import Record
from tunewise.errors import ConfigError, DataError
from tunewise.models.index import VectorIndex

FACTS = {"zorblax": "Zorblax is taken for migraine.", "quenta": "Quenta is taken for insomnia.",
         "vexil": "Vexil is taken for acne.", "morrow": "Morrow is taken for asthma.",
         "pellin": "Pellin is taken for gout.", "sarvo": "Sarvo is taken for eczema."}


def write_corpus(folder, dated=False):
    path = folder / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": k, "text": v} | ({"date": f"201{i}-01-01"} if dated else {})) + "\n"
                            for i, (k, v) in enumerate(FACTS.items())))
    return path


def test_chunks_are_overlapping_windows_and_cover_every_word():
    doc = Document("d", " ".join(f"w{i}" for i in range(25)))
    chunks = chunk([doc], words=10, overlap=3)
    assert [c.text.split()[0] for c in chunks] == ["w0", "w7", "w14", "w21"]
    # 24 words: the last window (w14-w23) already holds the tail, so no chunk of overlap words alone
    assert len(chunk([Document("d", " ".join(f"w{i}" for i in range(24)))], words=10, overlap=3)) == 3
    assert chunks[1].text.split()[:3] == chunks[0].text.split()[-3:]  # the overlap
    assert {w for c in chunks for w in c.text.split()} == set(doc.text.split())
    assert len(chunk([Document("s", "one two")], words=10, overlap=3)) == 1  # short document: one chunk
    with pytest.raises(ValueError):
        chunk([doc], words=10, overlap=10)


def test_corpus_from_folder_and_jsonl_and_its_hash(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.md").write_text("alpha text")
    (tmp_path / "f" / "sub").mkdir()
    (tmp_path / "f" / "sub" / "b.txt").write_text("beta text")
    (tmp_path / "f" / "skip.pdf").write_text("not read")
    assert [d.id for d in read_corpus(tmp_path / "f")] == ["a.md", "sub/b.txt"]
    docs = read_corpus(write_corpus(tmp_path, dated=True))
    assert len(docs) == 6 and docs[0].date == "2010-01-01"
    assert corpus_hash(docs) != corpus_hash(docs[:-1] + [Document(docs[-1].id, docs[-1].text + "!", docs[-1].date)])
    assert [d.id for d in frozen_at(docs, "2012-06-30")] == ["zorblax", "quenta", "vexil"]


def test_bad_corpus_names_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\n{"id": "b"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2 field 'text'"):
        read_corpus(bad)
    with pytest.raises(ConfigError, match="not found"):
        read_corpus(tmp_path / "missing")


def test_overlap_must_be_below_chunk_size():
    with pytest.raises(ValueError):
        RetrievalSettings(chunk_words=20, chunk_overlap=20)


def test_exact_numpy_and_faiss_agree():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.normal(size=(40, 32)).astype(np.float32)
    exact, flat = VectorIndex(vectors), VectorIndex(vectors, faiss_above=0)
    assert (exact.kind, flat.kind) == ("numpy", "faiss")
    (i1, s1), (i2, s2) = exact.search(queries, 5), flat.search(queries, 5)
    assert (i1 == i2).all() and np.allclose(s1, s2, atol=1e-5)


def test_exact_numpy_and_faiss_agree_on_a_real_corpus(tmp_path):
    pytest.importorskip("faiss")
    from tunewise.models.embed import get_embedder

    chunks = chunk(read_corpus(write_corpus(tmp_path)), words=10, overlap=2)
    emb = get_embedder()
    vectors, queries = emb.encode([c.text for c in chunks]), emb.encode([f"what is {k} for?" for k in FACTS])
    i1, _ = VectorIndex(vectors).search(queries, 3)
    i2, _ = VectorIndex(vectors, faiss_above=0).search(queries, 3)
    assert (i1 == i2).all()
    assert [chunks[row[0]].doc_id for row in i1] == list(FACTS)  # each question finds its own document


def rec(i, drug, doc=True):
    return Record(id=f"q{i}", messages=(("user", f"Which condition is {drug} taken for?"),),
                  output=FACTS[drug].split(" for ")[1].rstrip("."), source="mem", line=i,
                  doc=drug if doc else None)


def test_rag_puts_the_passages_in_the_prompt_and_reports_recall(tmp_path):
    from tunewise.bakeoff import candidate_key, default_candidates, run_bakeoff
    from tunewise.store import Store
    from tunewise.strategies import build
    from tunewise.ui import Progress

    corpus = write_corpus(tmp_path)
    task = TaskSpec(name="t", type="generation", metric="token_f1", corpus=str(corpus),
                    instruction="Answer with the condition only.",
                    retrieval=RetrievalSettings(chunk_words=20, chunk_overlap=0, top_k=1))
    specs = [s for s in default_candidates(task) if s.strategy in ("zero_shot", "rag")]
    assert [s.name for s in specs] == ["zero_shot", "rag"]
    train = [rec(i, d) for i, d in enumerate(["zorblax", "quenta"])]
    test = [rec(10 + i, d, doc=i != 3) for i, d in enumerate(["vexil", "morrow", "pellin", "sarvo"])]
    budget = BUDGETS["quick"].model_copy(update={"bootstrap": 100, "test_first": None})
    results, _ = run_bakeoff(specs, task=task, labels=[], train=train, validation=[], test=test, budget=budget,
                             seed=0, run_dir=tmp_path / "run", store=Store(tmp_path / "s"), data_key="k",
                             progress=Progress(quiet=True))
    zero, rag = results
    assert zero.status == rag.status == "ok", (zero.error, rag.error)
    assert rag.family == "retrieval" and zero.retrieval_recall is None
    assert rag.retrieval_recall.value == 1.0 and sum(h is not None for h in rag.retrieval_hits) == 3
    assert any(n.startswith("retrieval: recall@1 1.00") for n in rag.notes)
    assert {"exact_match", "token_f1", "rouge_l"} <= set(rag.metrics)
    # the passage is in the prompt: the rag prompt is longer by about one chunk
    assert rag.prompt_tokens_mean > zero.prompt_tokens_mean + 5
    # the corpus content is in the cache key
    strategy = build(specs[1])
    key = candidate_key(specs[1], strategy.settings(), "k", task, budget, 0)
    corpus.write_text(corpus.read_text().replace("gout", "lupus"))
    edited = build(specs[1])
    assert candidate_key(specs[1], edited.settings(), "k", task, budget, 0) != key


def test_rag_without_a_corpus_fails_with_the_fix():
    from tunewise.strategies import CandidateSpec, build

    with pytest.raises(ConfigError, match="set `corpus:`"):
        build(CandidateSpec(name="rag", strategy="rag"))


def test_front_matter_dates_a_folder_document(tmp_path):
    (tmp_path / "a.md").write_text("---\ndate: 2019-05-01\n---\n# A\nbody")
    (tmp_path / "b.md").write_text("no front matter\n---\n")
    a, b = read_corpus(tmp_path)
    assert (a.date, a.text) == ("2019-05-01", "# A\nbody") and b.date is None
    (tmp_path / "c.md").write_text("---\ndate: [\n---\nx")
    with pytest.raises(DataError, match="c.md: front matter"):
        read_corpus(tmp_path)


def test_answers_are_kept_by_request_and_reused_with_their_seconds(tmp_path):
    from tunewise.models.answer_cache import CachedAnswers
    from tunewise.models.backend import Scored
    from tunewise.store import Store

    class Counting:
        """Answers 'long...' prompts up to the cap (no end of turn), the others in 3 tokens."""
        name, asked = "counting", []

        def generate(self, conversations, max_new_tokens):
            Counting.asked += [c[-1][1] for c in conversations]
            return [Scored(f"{c[-1][1]}/{max_new_tokens}", 0.5, 7,
                           max_new_tokens if c[-1][1].startswith("long") else 3, retries=1) for c in conversations]

    cached = CachedAnswers(Counting(), Store(tmp_path / "s"), ["settings"])
    first = cached.generate([[("user", "a")], [("user", "long b")]], 12)
    again = cached.generate([[("user", "long b")], [("user", "c")], [("user", "a")]], 12)
    assert Counting.asked == ["a", "long b", "c"]  # each prompt generated once
    assert [s.prediction for s in again] == ["long b/12", "c/12", "a/12"]
    assert (again[2].seconds, again[2].prompt_tokens, again[2].output_tokens) == (0.5, 7, 3)  # as generated
    assert again[0].cached and again[0].retries == 0 and not again[1].cached and not first[0].cached
    # another cap: an answer that stopped by itself within it is the same; one cut at its cap is not
    other_cap = cached.generate([[("user", "a")], [("user", "long b")]], 20)
    assert [s.prediction for s in other_cap] == ["a/12", "long b/20"] and Counting.asked[-1] == "long b"
    assert cached.generate([[("user", "a")]], 3)[0].cached and not cached.generate([[("user", "a")]], 2)[0].cached
    other = CachedAnswers(Counting(), Store(tmp_path / "s"), ["other settings"])
    other.generate([[("user", "c")]], 12)
    assert Counting.asked[-1] == "c"  # another model setting: generated again


def test_a_stored_answer_under_another_cap_equals_a_fresh_one(tmp_path):
    """Greedy decoding writes the same tokens whatever the cap: an answer that ended by itself is reused
    under a smaller or larger cap, and equals the answer generated under that cap."""
    from tunewise.models.answer_cache import CachedAnswers
    from tunewise.models.lm import LanguageModel
    from tunewise.models.load import load_model
    from tunewise.store import Store

    model, tok = load_model("smollm2-135m")
    lm = LanguageModel(model, tok, "smollm2-135m")
    convs = [[("system", "Answer with the condition only."), ("user", f"{FACTS[d]}\nWhich condition is {d} taken for?")]
             for d in ("vexil", "morrow", "pellin")]
    calls = []

    class Spy:
        name, model, device = lm.name, lm.model, lm.device

        def generate(self, conversations, max_new_tokens):
            calls.append(len(conversations))
            return lm.generate(conversations, max_new_tokens)

    cached = CachedAnswers(Spy(), Store(tmp_path / "s"), [])
    wide = cached.generate(convs, 24)
    for cap in (12, 30):
        fresh = lm.generate(convs, cap)
        reused = cached.generate(convs, cap)
        assert [(s.prediction, s.output_tokens) for s in reused] == [(s.prediction, s.output_tokens) for s in fresh]
        assert [s.cached for s in reused] == [s.output_tokens < 24 and s.output_tokens <= cap for s in wide]
    assert calls == [3, 2] and any(s.output_tokens < 12 for s in wide)  # reuse exercised; cap 30: all reused


def test_rag_asked_again_answers_as_generated_afresh(tmp_path):
    """The time split asks rag some of the random split's questions again: answered from the store,
    with the same predictions a fresh store gives."""
    from tunewise.bakeoff import default_candidates, run_candidate
    from tunewise.store import Store
    from tunewise.strategies import Context, ModelPool
    from tunewise.ui import Progress

    task = TaskSpec(name="t", type="generation", metric="token_f1", corpus=str(write_corpus(tmp_path)),
                    instruction="Answer with the condition only.",
                    retrieval=RetrievalSettings(chunk_words=20, chunk_overlap=0, top_k=1))
    spec = next(s for s in default_candidates(task) if s.strategy == "rag")
    budget = BUDGETS["quick"].model_copy(update={"bootstrap": 50, "test_first": None})
    first_test = [rec(10 + i, d) for i, d in enumerate(["vexil", "morrow", "pellin"])]
    again_test = [rec(11, "morrow"), rec(12, "pellin"), rec(13, "sarvo")]

    def score(store, train, test, key):
        ctx = Context(task=task, labels=[], train=train, validation=[], budget=budget, seed=0,
                      work_dir=tmp_path / key, models=ModelPool(store=store))
        return run_candidate(spec, ctx, test, store, key, Progress(quiet=True), latency_sample=0)

    store = Store(tmp_path / "s")
    first = score(store, [rec(0, "zorblax")], first_test, "random")
    assert len(store.keys("answer")) == 3
    again = score(store, [rec(1, "quenta")], again_test, "time")  # another candidate key, the same cap
    assert len(store.keys("answer")) == 4  # only sarvo generated
    fresh = score(Store(tmp_path / "fresh"), [rec(1, "quenta")], again_test, "time")
    assert first.status == again.status == fresh.status == "ok"
    assert again.predictions == fresh.predictions and again.predictions[:2] == first.predictions[1:]
