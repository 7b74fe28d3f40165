"""The optional judge model: the shipped 135M model grades answers by grade likelihood (its quality is
not the point here: the plumbing is), scores carry intervals, the report shows the prompt, and a bad
judge setting is a one-line error."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.config import TaskSpec
from tunewise.data.records import Record
from tunewise.errors import ConfigError
from tunewise.evaluate.judge import GRADES, JUDGE_PROMPT, check_judge, judge_candidates
from tunewise.results import CandidateResult

QA = [("Which team maintains the atlas service?", "billing"), ("What port does atlas listen on?", "7970"),
      ("Which team maintains the comet service?", "search"), ("What port does comet listen on?", "8080")]


def test_the_shipped_model_grades_every_candidates_answers_with_intervals():
    from tunewise.strategies import ModelPool

    test = [Record(id=f"q{i}", messages=(("user", q),), output=a) for i, (q, a) in enumerate(QA)]
    right = CandidateResult(name="right", family="prompting", strategy="zero_shot", predictions=[a for _, a in QA])
    wrong = CandidateResult(name="wrong", family="prompting", strategy="zero_shot",
                            predictions=["billing", "no idea", "the weather", "billing"])
    failed = CandidateResult(name="failed", family="prompting", strategy="zero_shot", status="failed")
    result = judge_candidates(ModelPool(device="cpu"), "smollm2-135m", [right, wrong, failed], test, 100, 0)
    assert result.method == "likelihood" and result.prompt == JUDGE_PROMPT and result.grades == GRADES
    assert [s.candidate for s in result.scores] == ["right", "wrong"]  # a failed candidate has no answers
    assert result.answers_graded == 7  # "billing" for the first question is graded once for both
    for s in result.scores:
        assert s.records == 4 and sum(s.grades.values()) == 4 and set(s.grades) <= set(GRADES)
        assert 0 <= s.score.ci_low <= s.score.value <= s.score.ci_high <= 1


def test_a_served_judge_grades_like_the_local_one(tmp_path, monkeypatch):
    """Any backend: the same model behind an OpenAI-compatible server (echo + logprobs) gives the same grades."""
    from servers import EchoServer
    from tunewise.config import ModelConfig
    from tunewise.models.lm import LanguageModel
    from tunewise.models.load import load_model
    from tunewise.store import Store
    from tunewise.strategies import ModelPool, base

    model, tokenizer = load_model("smollm2-135m", dtype="float32")
    lm = LanguageModel(model, tokenizer, "smollm2-135m")
    monkeypatch.setattr(base.ModelPool, "lm", lambda self, name: lm)  # the fp32 model the server also uses
    test = [Record(id=f"q{i}", messages=(("user", q),), output=a) for i, (q, a) in enumerate(QA[:3])]
    answers = CandidateResult(name="c", family="prompting", strategy="zero_shot", predictions=["billing", "80", "x"])
    local = judge_candidates(ModelPool(), "smollm2-135m", [answers], test, 50, 0)
    with EchoServer(lm) as server:
        pool = ModelPool(models={"echo": ModelConfig(base_url=server.url, model="smollm2-135m")},
                         store=Store(tmp_path / "s"))
        served = judge_candidates(pool, "echo", [answers], test, 50, 0)
    assert served.method == local.method == "likelihood"
    assert served.scores[0].grades == local.scores[0].grades and served.scores[0].score == local.scores[0].score


def test_a_judge_that_can_only_generate_has_its_answer_matched_to_one_grade():
    from tunewise.evaluate.judge import UNGRADED, grade
    from tunewise.models.backend import Scored

    class Generating:
        def generate(self, conversations, max_new_tokens):
            assert "Answer to grade:\nblue" in conversations[0][-1][1]
            return [Scored(text, 0.0, 0, 0) for text in ["Incorrect.", "correct", "correct or incorrect"]]

    items = [("What colour?", "red", "blue"), ("2+2?", "4", "4"), ("Capital?", "Paris", "Lyon")]
    assert grade(Generating(), "generate", items) == ["incorrect", "correct", UNGRADED]


def test_a_judge_on_a_classification_task_or_an_unnamed_served_model_is_a_one_line_error():
    with pytest.raises(ValueError, match="generation task only"):
        TaskSpec(type="classification", judge="smollm2-135m")
    with pytest.raises(ConfigError, match=r"^judge \(--judge or the task file.s judge:\): .*no served model name"):
        check_judge(TaskSpec(type="generation", judge="http://127.0.0.1:9/v1"))
    check_judge(TaskSpec(type="generation", judge="smollm2-135m"))  # a local model: nothing to check


def test_run_with_a_judge_reports_its_scores_and_prompt(tmp_path):
    """--judge on a tiny generation run: results.json holds the judge's scores, both reports show the prompt,
    and the verdict still names the task's metric."""
    rows = [{"prompt": q, "completion": a} for q, a in QA]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "task.yaml").write_text("type: generation\nmetric: token_f1\ninput_field: prompt\n"
                                        "output_field: completion\ntest_file: test.jsonl\n")
    done = CliRunner().invoke(app, ["run", str(tmp_path / "train.jsonl"), "--task", str(tmp_path / "task.yaml"),
                                    "--budget", "quick", "--candidates", "zero_shot", "--judge", "smollm2-135m",
                                    "--no-curve", "--no-forgetting", "--device", "cpu", "--out",
                                    str(tmp_path / "run")])
    assert done.exit_code == 0, done.output + repr(done.exception)
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    judge = r["judge"]
    assert judge["model"] == "smollm2-135m" and [s["candidate"] for s in judge["scores"]] == ["zero_shot"]
    assert judge["scores"][0]["records"] == 4 and "ci_low" in judge["scores"][0]["score"]
    assert r["task"]["metric"] == "token_f1"
    md = (tmp_path / "run" / "report.md").read_text()
    assert "## Judge model" in md and "Reference answer:" in md and "judge score [95% CI]" in md
    html = (tmp_path / "run" / "report.html").read_text()
    assert 'id="judge"' in html and "Answer to grade:" in html
