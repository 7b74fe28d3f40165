"""Deciding: the criteria as data, the no-data advisor, and the verdict from measured evidence."""

from tunewise.decide.advisor import QUESTIONS, Answers, Question, advise, ask, load_answers
from tunewise.decide.criteria import CRITERIA, DECISIONS, Criterion, get
from tunewise.decide.verdict import decide

__all__ = ["CRITERIA", "DECISIONS", "QUESTIONS", "Answers", "Criterion", "Question", "advise", "ask", "decide",
           "get", "load_answers"]
