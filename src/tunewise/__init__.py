"""tunewise: should we fine-tune a language model for this task, or not? Measured on your data.

The Python API (see the README's "Python API"): `run`, `profile`, `advise`, `load_run`.
"""

__version__ = "0.3.0"

from tunewise.api import advise, load_run, profile, run  # noqa: E402  (after __version__: the runner reads it)
from tunewise.config import Budget, TaskSpec  # noqa: E402
from tunewise.errors import TunewiseError  # noqa: E402
from tunewise.results import CandidateResult, DataProfile, RunResults, Verdict  # noqa: E402

__all__ = ["Budget", "CandidateResult", "DataProfile", "RunResults", "TaskSpec", "TunewiseError", "Verdict",
           "__version__", "advise", "load_run", "profile", "run"]
