"""Classical family: "do you need a language model at all?" TF-IDF + logistic regression, and the
majority-class floor that every other option must beat to count at all."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from tunewise.data.records import Record
from tunewise.errors import ConfigError
from tunewise.models.backend import Scored
from tunewise.strategies.base import CandidateSpec, Context, Family, FitFacts, OneAtATime, register


def _classification_only(ctx: Context, name: str) -> None:
    if ctx.task.type != "classification":
        raise ConfigError(f"{name} applies to classification tasks only")


PIPELINE = "pipeline.skops"


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

    def save(self, folder: Path) -> None:
        (folder / "majority.json").write_text(json.dumps({"label": self.label}))

    def load(self, ctx: Context, folder: Path) -> None:
        self.label = json.loads((folder / "majority.json").read_text())["label"]


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

    def save(self, folder: Path) -> None:
        import skops.io as sio

        sio.dump(self.pipe, folder / PIPELINE)

    def load(self, ctx: Context, folder: Path) -> None:
        """skops refuses to build any type it is not told to trust: only the numpy types the fitted
        pipeline holds are trusted, so a tampered file fails instead of running code."""
        import skops.io as sio

        path = folder / PIPELINE
        untrusted = sio.get_untrusted_types(file=path)
        unexpected = [t for t in untrusted if not t.startswith("numpy.")]
        if unexpected:
            raise ConfigError(f"{path}: holds types a TF-IDF pipeline does not ({', '.join(unexpected[:5])})",
                              fix="save the candidate again with `tunewise run`")
        self.pipe = sio.load(path, trusted=untrusted)
