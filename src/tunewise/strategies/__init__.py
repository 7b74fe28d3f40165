"""The bake-off's options, one module per family, registered by name."""

from tunewise.strategies import classical, finetune, prompting, retrieval  # noqa: F401  (registers)
from tunewise.strategies.base import CandidateSpec, Context, ModelPool, build, known, register

__all__ = ["CandidateSpec", "Context", "ModelPool", "build", "known", "register"]
