"""Tiny LoRA run for `accelerate launch` (tests/test_train.py): train on 12 yes/no items (4 more
validate), save the adapter from the main process into argv[1] and drop a `rank-<i>.done` file per
process there."""

from __future__ import annotations

import sys
from pathlib import Path


def main(out: Path) -> None:
    from accelerate.state import PartialState

    from tunewise.models.load import load_model
    from tunewise.models.train import Example, TrainConfig, save_artifact, train

    state = PartialState(cpu=True)  # cpu=True: gloo DDP across processes (the default finds no GPU and runs alone)
    model, tok = load_model("smollm2-135m", device="cpu", dtype="float32")
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    # a shared instruction of 16+ tokens: the loss encodes it once per batch (DDP must still sync)
    items = [Example(enc(f"Answer yes or no, in one word, to each question about numbers below.\nIs {i} a number?\n"),
                     enc("yes<|im_end|>")) for i in range(16)]
    cfg = TrainConfig(r=4, alpha=8, epochs=1, max_length=48, batch_size=4, learning_rate=1e-3)
    result = train(model, tok, items[:12], items[12:], cfg, out / "work", progress=False)
    if state.is_main_process:
        save_artifact(result.model, tok, out / "adapter")
    state.wait_for_everyone()
    # DDP keeps the ranks' weights equal although they see different batches: a checksum shows it
    checksum = sum(float(p.detach().double().sum()) for n, p in result.model.named_parameters() if "lora_" in n)
    (out / f"rank-{state.process_index}.done").write_text(
        f"steps={result.steps} tokens={result.tokens} world={state.num_processes} "
        f"val={result.losses[-1].val_loss:.6f} lora_sum={checksum:.6e}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
