"""Tiny LoRA run for `accelerate launch` (tests/test_train.py): train on 16 yes/no items, save the
adapter from the main process into argv[1] and drop a `rank-<i>.done` file per process there."""

from __future__ import annotations

import sys
from pathlib import Path


def main(out: Path) -> None:
    from accelerate.state import PartialState

    from tunewise.models.load import load_model
    from tunewise.models.train import Example, TrainConfig, save_artifact, train

    state = PartialState()
    model, tok = load_model("smollm2-135m", device="cpu", dtype="float32")
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    items = [Example(enc(f"Say yes or no: is {i} a number?\n"), enc("yes<|im_end|>")) for i in range(16)]
    cfg = TrainConfig(r=4, alpha=8, epochs=1, max_length=48, batch_size=4, learning_rate=1e-3)
    result = train(model, tok, items[:12], items[12:], cfg, out / "work", progress=False)
    if state.is_main_process:
        save_artifact(result.model, tok, out / "adapter")
    state.wait_for_everyone()
    (out / f"rank-{state.process_index}.done").write_text(
        f"steps={result.steps} tokens={result.tokens} world={state.num_processes}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
