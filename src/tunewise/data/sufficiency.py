"""Is a split usable for a bake-off? Enough classes and records per class, no test label unseen in train.

Scoring a split that cannot show anything (one class, three records, test labels no option was
trained on) gives numbers that look like results: `tunewise run` refuses it with the counts, and
`tunewise profile` shows the same findings as warnings.

Minimums (classification counts a class only when it has the minimum):
- train: at least MIN_CLASSES classes with MIN_TRAIN_PER_CLASS records each, so few-shot has
  examples of each and TF-IDF and LoRA have something to tell apart;
- test: at least MIN_CLASSES classes with MIN_TEST_PER_CLASS records each;
- generation: at least MIN_TRAIN_RECORDS training and MIN_TEST_RECORDS test records.

Test labels absent from train stop the run when the labels are inferred from train (they are not
even in the label set); `--allow-unseen-labels` turns that into a warning in the console and the
report. With labels declared in the task file they are a warning: prompting can still predict them.
"""

from __future__ import annotations

from collections import Counter

from tunewise.config import TaskSpec
from tunewise.data.split import Split
from tunewise.errors import DataError

MIN_CLASSES = 2
MIN_TRAIN_PER_CLASS = 4
MIN_TEST_PER_CLASS = 2
MIN_TRAIN_RECORDS = 8
MIN_TEST_RECORDS = 4
ALLOW_UNSEEN_FLAG = "--allow-unseen-labels"


def _counts(counts: Counter, limit: int = 8) -> str:
    shown = ", ".join(f"{label!r}: {n}" for label, n in counts.most_common(limit))
    return shown + (f", ... {len(counts) - limit} more" if len(counts) > limit else "")


def size_problems(task: TaskSpec, split: Split) -> list[str]:
    """Why the split is too small to compare options on, each with its numbers; empty when it is fine."""
    out = []
    if task.type != "classification":
        for name, records, minimum in (("train", split.train, MIN_TRAIN_RECORDS), ("test", split.test, MIN_TEST_RECORDS)):
            if len(records) < minimum:
                out.append(f"{name} has {len(records)} record(s); need at least {minimum}")
        return out
    for name, records, minimum in (("train", split.train, MIN_TRAIN_PER_CLASS), ("test", split.test, MIN_TEST_PER_CLASS)):
        counts = Counter(r.output for r in records)
        enough = sum(1 for n in counts.values() if n >= minimum)
        if enough < MIN_CLASSES:
            out.append(f"{name} has {enough} class(es) with at least {minimum} records ({len(records)} records: "
                       f"{_counts(counts) or 'none'}); need at least {MIN_CLASSES}")
    return out


def unseen_test_labels(split: Split) -> Counter:
    """Test labels that no training record carries, with their test counts."""
    seen = {r.output for r in split.train}
    return Counter(r.output for r in split.test if r.output not in seen)


def unseen_message(task: TaskSpec, unseen: Counter, n_test: int) -> str:
    n = sum(unseen.values())
    where = f"{len(unseen)} test label(s) never occur in train ({_counts(unseen)}; {n} of {n_test} test records)"
    if task.labels is None:
        return f"{where}: the labels are inferred from train, so no option can predict them and every score counts " \
               f"them as errors"
    return f"{where}: declared in the task, so prompting can predict them, but trained options never saw them"


def check_split(task: TaskSpec, split: Split, source: str, *, allow_unseen_labels: bool = False) -> list[str]:
    """Raise DataError when the split cannot support a bake-off; return the warnings to show otherwise.

    Test labels absent from train are an error when the labels are inferred from train (no option can
    predict them) unless `allow_unseen_labels`; with declared labels they are a warning."""
    problems = size_problems(task, split)
    if problems:
        raise DataError(source, "; ".join(problems),
                        fix=f"add records (at least {MIN_TRAIN_PER_CLASS} per class in train and {MIN_TEST_PER_CLASS} "
                            f"in test, for {MIN_CLASSES}+ classes), or check output_field and the test file"
                        if task.type == "classification" else
                        f"add records (at least {MIN_TRAIN_RECORDS} in train and {MIN_TEST_RECORDS} in test)")
    if task.type != "classification":
        return []
    unseen = unseen_test_labels(split)
    if not unseen:
        return []
    message = unseen_message(task, unseen, len(split.test))
    if task.labels is None and not allow_unseen_labels:
        raise DataError(source, message,
                        fix=f"add training records with these labels, drop them from the test data, or pass "
                            f"{ALLOW_UNSEEN_FLAG} to score them anyway with a warning")
    return [message]


def split_warnings(task: TaskSpec, split: Split) -> list[str]:
    """The same findings as `check_split`, as warnings (for `tunewise profile`)."""
    out = size_problems(task, split)
    if task.type == "classification":
        unseen = unseen_test_labels(split)
        if unseen:
            out.append(unseen_message(task, unseen, len(split.test)))
    return out
