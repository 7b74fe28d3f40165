"""Classical family: "do you need a language model at all?" TF-IDF + logistic regression, and the
majority-class floor that every other option must beat to count at all."""

from __future__ import annotations

import time
from collections import Counter

from tunewise.data.records import Record
from tunewise.errors import ConfigError
from tunewise.models.backend import Scored
from tunewise.strategies.base import CandidateSpec, Context, Family, FitFacts, OneAtATime, register


def _classification_only(ctx: Context, name: str) -> None:
    if ctx.task.type != "classification":
        raise ConfigError(f"{name} applies to classification tasks only")


@register("majority")
class Majority(OneAtATime):
    family: Family = "baseline"

    def __init__(self, spec: CandidateSpec):
        self.spec = spec

    def settings(self) -> dict:
        return {}

    def fit(self, ctx: Context) -> FitFacts:
        _classification_only(ctx, "majority")
        self.label = Counter(r.output for r in ctx.train).most_common(1)[0][0]
        return FitFacts()

    def predict(self, ctx: Context, record: Record) -> Scored:
        return Scored(self.label, 0.0, 0, 0)


@register("classical")
class TfidfLogistic(OneAtATime):
    family: Family = "classical"

    def __init__(self, spec: CandidateSpec):
        self.spec = spec
        self.c = float(spec.options.get("C", 10.0))
        self.ngrams = tuple(spec.options.get("ngram_range", (1, 2)))

    def settings(self) -> dict:
        return {"vectorizer": "tfidf", "ngram_range": list(self.ngrams), "C": self.c, "class_weight": "balanced"}

    def fit(self, ctx: Context) -> FitFacts:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        _classification_only(ctx, "classical")
        start = time.perf_counter()
        self.pipe = make_pipeline(
            TfidfVectorizer(ngram_range=self.ngrams, sublinear_tf=True, min_df=1),
            LogisticRegression(C=self.c, max_iter=2000, class_weight="balanced"))
        self.pipe.fit([r.text for r in ctx.train], [r.output for r in ctx.train])
        return FitFacts(train_seconds=time.perf_counter() - start)

    def predict(self, ctx: Context, record: Record) -> Scored:
        start = time.perf_counter()
        label = self.pipe.predict([record.text])[0]
        return Scored(str(label), time.perf_counter() - start, 0, 0)
