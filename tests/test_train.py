"""Fine-tuning: completion-only loss at loss positions, LoRA learning, resume, artifacts, DDP launch."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunewise.models.train import (
    CompletionLoss,
    Example,
    FastDropout,
    TrainConfig,
    collate,
    completion_loss,
    length_grouped_batches,
    save_artifact,
    train,
    truncate,
)

ROOT = Path(__file__).resolve().parents[1]
END = "<|im_end|>"


@pytest.fixture(scope="module")
def base():
    """The shipped model, on one thread: the batches here are tiny, and OpenMP threads that wait on a
    busy CPU (other jobs) slow tiny ops down a hundredfold."""
    from tunewise.models.load import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tok = load_model("smollm2-135m", device="cpu", dtype="float32")
    yield model, tok
    torch.set_num_threads(threads)


def enc(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def secret_examples(tok, items: range, word: str = " zebra") -> list[Example]:
    return [Example(enc(tok, f"Q: what is the secret word for item {i}?\nA:"), enc(tok, word + END)) for i in items]


def logprob(model, prompt: list[int], completion: list[int]) -> float:
    batch = collate([(prompt + completion, len(prompt))], 0)
    with torch.no_grad():
        return -float(CompletionLoss(model)(**batch, reduction="sum"))


# -- pure helpers ------------------------------------------------------------------------------

def test_truncate_keeps_completion_and_cuts_prompt_from_left():
    ids, p = truncate(Example(list(range(10)), [100, 101, 102]), 8)
    assert ids == [5, 6, 7, 8, 9, 100, 101, 102] and p == 5
    ids, p = truncate(Example([1, 2], [3]), 8)
    assert ids == [1, 2, 3] and p == 2
    ids, p = truncate(Example([1, 2, 3], list(range(100, 120))), 6)  # completion too long: keep 1 prompt token
    assert ids == [3, 100, 101, 102, 103, 104] and p == 1


def test_length_grouped_batches_cover_everything_once_and_cut_padding():
    import random

    lengths = [random.Random(i).randint(5, 300) for i in range(400)]
    batches = length_grouped_batches(lengths, 8, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(400))
    assert max(lengths[i] for i in batches[0]) == max(lengths)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    shuffled = list(range(400))
    random.Random(0).shuffle(shuffled)
    naive = sum(len(shuffled[i:i + 8]) * max(lengths[j] for j in shuffled[i:i + 8]) for i in range(0, 400, 8))
    assert padded < 0.8 * naive
    assert batches == length_grouped_batches(lengths, 8, seed=3)  # deterministic (resume relies on it)


def test_fast_dropout_keeps_probability_and_scale():
    torch.manual_seed(0)
    drop = FastDropout(0.1).train()
    x = torch.ones(1000, 1001)
    y = drop(x)
    assert abs(float((y == 0).float().mean()) - 0.1) < 0.003
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.9))
    assert drop.eval()(x) is x


def test_config_defaults_and_forbids_unknown():
    cfg = TrainConfig()
    assert cfg.lr() == 6e-4 and TrainConfig(method="full").lr() == 3e-5
    assert cfg.dropout == 0.0 and cfg.layers_share == 1.0
    assert all(f.description for f in TrainConfig.model_fields.values())
    with pytest.raises(Exception):
        TrainConfig(rank=4)


# -- with the model ----------------------------------------------------------------------------

def test_loss_at_loss_positions_matches_full_forward(base):
    model, tok = base
    items = [truncate(Example(enc(tok, f"Tell me about item {i} please, in a few words:"),
                              enc(tok, " it is fine" * (i + 1) + END)), 64) for i in range(3)]
    batch = collate(items, tok.pad_token_id)
    labels = torch.full_like(batch["input_ids"], -100)
    for b, (ids, p) in enumerate(items):
        labels[b, p:len(ids)] = torch.tensor(ids[p:])
    with torch.no_grad():
        reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        fast = completion_loss(model, batch)
        slow = completion_loss(model, batch, fast=False)
    assert CompletionLoss(model).fast
    assert abs(float(fast) - float(reference)) < 1e-4
    assert abs(float(slow) - float(reference)) < 1e-4


def test_a_shared_prompt_prefix_runs_once_with_the_same_loss_and_gradients(base, monkeypatch):
    from tunewise.models.training import loss as loss_module
    from tunewise.models.train import _with_lora

    model, tok = base
    system = "You are a careful assistant. Answer every question with one word and nothing else at all.\n"
    items = [truncate(Example(enc(tok, system + f"Q: item {i}{' again' * i}?\nA:"), enc(tok, " yes" + END)), 64)
             for i in range(3)]
    batch = collate(items, tok.pad_token_id)
    assert loss_module.shared_prefix(batch["input_ids"], batch["loss_index"]) >= loss_module.MIN_SHARED_PREFIX
    lm = _with_lora(copy.deepcopy(model), TrainConfig(r=4, alpha=8))
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)  # B starts at 0: no gradient would reach A

    def loss_and_grads():
        lm.zero_grad()
        loss = CompletionLoss(lm)(**batch)
        loss.backward()
        return float(loss), {n: p.grad.clone() for n, p in lm.named_parameters() if p.requires_grad}

    shared, grads = loss_and_grads()
    monkeypatch.setattr(loss_module, "MIN_SHARED_PREFIX", 10**9)
    whole, reference = loss_and_grads()
    assert shared == pytest.approx(whole, abs=1e-5)
    for name, g in reference.items():
        assert torch.allclose(grads[name], g, atol=1e-6, rtol=1e-4), name


def test_lora_layers_share_adapts_only_the_top_layers(base):
    from tunewise.models.train import _with_lora

    model, _ = base
    n = model.config.num_hidden_layers
    peft_model = _with_lora(copy.deepcopy(model), TrainConfig(layers_share=0.5))
    adapted = {int(name.split("layers.")[1].split(".")[0]) for name, _ in peft_model.named_parameters()
               if "lora_" in name}
    assert adapted == set(range(n - (n + 1) // 2, n))


@pytest.mark.parametrize("share, r", [(1.0, 16), (0.5, 4)])
def test_lora_trainable_params_are_counted_before_injection(base, share, r):
    from tunewise.models.load import count_params
    from tunewise.models.train import _with_lora, lora_trainable_params

    model, _ = base
    cfg = TrainConfig(layers_share=share, r=r)
    assert lora_trainable_params(model, cfg) == count_params(_with_lora(copy.deepcopy(model), cfg))[1] > 0


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory):
    model, tok = base
    lm = copy.deepcopy(model)
    tr, va = secret_examples(tok, range(24)), secret_examples(tok, range(100, 108))
    probe = enc(tok, "Q: what is the secret word for item 555?\nA:")
    before = {w: logprob(lm, probe, enc(tok, w + END)) for w in (" zebra", " apple")}
    val_batch = collate([truncate(e, 48) for e in va], tok.pad_token_id)
    with torch.no_grad():
        val_before = float(completion_loss(lm, val_batch))
    cfg = TrainConfig(r=8, alpha=16, epochs=3, learning_rate=1e-3, batch_size=8, max_length=48, warmup_ratio=0.0)
    result = train(lm, tok, tr, va, cfg, tmp_path_factory.mktemp("lora"), progress=False)
    return result, tok, probe, before, val_before


def test_lora_training_lowers_val_loss_and_teaches_completion(trained):
    result, tok, probe, before, val_before = trained
    assert [e.epoch for e in result.losses] == [1.0, 2.0, 3.0]
    vals = [e.val_loss for e in result.losses]
    assert min(vals) < 0.5 * val_before
    assert vals[result.best_epoch - 1] == min(vals)
    assert result.steps == 9 and result.tokens > 0 and result.tokens_per_s > 0 and result.seconds > 0
    assert result.peak_memory_mb > 0 and result.resumed_from_step is None
    after = {w: logprob(result.model, probe, enc(tok, w + END)) for w in (" zebra", " apple")}
    assert after[" zebra"] > after[" apple"]
    assert after[" zebra"] > before[" zebra"] + 1.0
    assert not result.model.training


def test_bf16_copies_of_frozen_weights_change_nothing_but_speed(base, tmp_path, monkeypatch):
    """On CPU bf16 the frozen Linear layers train on bf16 copies of their weights: the same numbers
    autocast would compute, and the fp32 weights are back afterwards."""
    import tunewise.models.train as train_module

    model, tok = base
    tr, va = secret_examples(tok, range(8), " kiwi"), secret_examples(tok, range(300, 302), " kiwi")
    cfg = TrainConfig(r=4, alpha=8, epochs=1, learning_rate=1e-3, batch_size=4, max_length=40, dtype="bfloat16")
    seen = []
    real_swap = train_module._swap_frozen_linears

    def spy(m, dtype):
        swapped = real_swap(m, dtype)
        seen.append((len(swapped), m.get_base_model().model.layers[0].mlp.down_proj.base_layer.weight.dtype))
        return swapped

    monkeypatch.setattr(train_module, "_swap_frozen_linears", spy)
    fast = train(copy.deepcopy(model), tok, tr, va, cfg, tmp_path / "a", progress=False)
    n_layers = model.config.num_hidden_layers
    assert seen == [(7 * n_layers, torch.bfloat16)]  # every projection of every layer; not the tied head
    monkeypatch.setattr(train_module, "_swap_frozen_linears", lambda m, dtype: [])
    plain = train(copy.deepcopy(model), tok, tr, va, cfg, tmp_path / "b", progress=False)
    assert fast.losses[0].train_loss == pytest.approx(plain.losses[0].train_loss, abs=1e-5)
    assert fast.losses[0].val_loss == pytest.approx(plain.losses[0].val_loss, abs=1e-5)
    restored = fast.model.get_base_model().model.layers[0].mlp.down_proj.base_layer.weight
    assert restored.dtype == torch.float32 and torch.equal(restored, model.model.layers[0].mlp.down_proj.weight)


def test_save_artifact_loads_back_with_peft(trained, tmp_path):
    from peft import AutoPeftModelForCausalLM

    result, tok, probe, _, _ = trained
    out = save_artifact(result.model, tok, tmp_path / "adapter")
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
    loaded = AutoPeftModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([probe])
    with torch.no_grad():
        a, b = loaded(input_ids=ids).logits, result.model(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)


class _StopForTest(RuntimeError):
    """Raised by `stop_after` to simulate an interrupted run."""


def stop_after(steps: int):
    """An on_step callback that interrupts training once `steps` optimizer steps are done."""
    def on_step(state):
        if state.step >= steps:
            raise _StopForTest(f"stopped after {state.step} steps")
    return on_step


def test_resume_continues_from_checkpoint(base, tmp_path):
    model, tok = base
    tr, va = secret_examples(tok, range(16), " kiwi"), secret_examples(tok, range(200, 204), " kiwi")
    cfg = TrainConfig(r=4, alpha=8, epochs=2, learning_rate=1e-3, batch_size=4, max_length=40, checkpoint_every=3)
    full = train(copy.deepcopy(model), tok, tr, va, cfg, tmp_path / "full", progress=False)
    assert full.steps == 8 and not (tmp_path / "full" / "checkpoint" / "state.pt").exists()

    out = tmp_path / "interrupted"
    with pytest.raises(_StopForTest):
        train(copy.deepcopy(model), tok, tr, va, cfg, out, progress=False, on_step=stop_after(5))
    assert (out / "checkpoint" / "state.pt").is_file()  # written at step 3 (step 4 ends epoch 1, step 5 is lost)
    resumed = train(copy.deepcopy(model), tok, tr, va, cfg, out, progress=False)
    assert resumed.resumed_from_step == 4  # the epoch-end checkpoint after step 4
    assert resumed.steps == full.steps == 8
    assert not (out / "checkpoint" / "state.pt").exists()
    for a, b in zip(resumed.losses, full.losses, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, abs=1e-4)
        assert a.val_loss == pytest.approx(b.val_loss, abs=1e-4)

    out = tmp_path / "mid-epoch"
    with pytest.raises(_StopForTest):
        train(copy.deepcopy(model), tok, tr, va, cfg, out, progress=False, on_step=stop_after(3))
    again = train(copy.deepcopy(model), tok, tr, va, cfg, out, progress=False)
    assert again.resumed_from_step == 3 and again.steps == 8
    assert again.losses[-1].val_loss == pytest.approx(full.losses[-1].val_loss, abs=1e-4)


def test_a_small_budget_is_checkpointed_by_time_as_well_as_by_steps(base, tmp_path):
    # fewer steps than checkpoint_every: only the clock can trigger a checkpoint before the end
    model, tok = base
    tr, va = secret_examples(tok, range(16), " kiwi"), secret_examples(tok, range(200, 202), " kiwi")
    cfg = TrainConfig(r=4, alpha=8, epochs=1, learning_rate=1e-3, batch_size=4, max_length=40,
                      checkpoint_every=1000, checkpoint_seconds=1e-6)
    out = tmp_path / "run"
    with pytest.raises(_StopForTest):
        train(copy.deepcopy(model), tok, tr, va, cfg, out, progress=False, on_step=stop_after(2))
    resumed = train(copy.deepcopy(model), tok, tr, va, cfg, out, progress=False)
    assert resumed.resumed_from_step == 2 and resumed.steps == 4


class _Exploit:
    """A pickle that runs code when loaded: what a hostile file in a shared store would hold."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_never_runs_as_code_and_bad_files_start_afresh(base, tmp_path):
    model, tok = base
    tr, va = secret_examples(tok, range(8), " kiwi"), secret_examples(tok, range(200, 202), " kiwi")
    cfg = TrainConfig(r=4, alpha=8, epochs=1, learning_rate=1e-3, batch_size=4, max_length=40)
    marker = tmp_path / "pwned"
    hostile = {"fingerprint": "x", "weights": {}, "optimizer": {}, "scheduler": {}, "rng": {},
               "state": _Exploit(marker)}
    for name, write in [("pickle", lambda f: torch.save(hostile, f)),
                        ("truncated", lambda f: f.write_bytes(b"PK\x03\x04 not a checkpoint")),
                        ("foreign", lambda f: torch.save({"weights": torch.zeros(3)}, f))]:
        out = tmp_path / name
        (out / "checkpoint").mkdir(parents=True)
        write(out / "checkpoint" / "state.pt")
        result = train(copy.deepcopy(model), tok, tr, va, cfg, out, progress=False)
        assert not marker.exists(), "loading the checkpoint ran its code"
        assert result.resumed_from_step is None and result.steps == 2  # a fresh start, trained to the end
        assert result.checkpoint_refused and "starting afresh" in result.checkpoint_refused
        assert "\n" not in result.checkpoint_refused


def test_early_stopping_keeps_best_epoch(base, tmp_path):
    model, tok = base
    # validation asks for " the" where training teaches " zebra": its loss rises after the first epoch
    tr = secret_examples(tok, range(8), " zebra")
    va = [Example(e.prompt_ids, enc(tok, " the")) for e in secret_examples(tok, range(50, 54))]
    cfg = TrainConfig(r=4, alpha=8, epochs=4, learning_rate=2e-3, batch_size=8, max_length=40, dtype="float32")
    result = train(copy.deepcopy(model), tok, tr, va, cfg, tmp_path, progress=False)
    assert result.stopped_early and len(result.losses) == 2 and result.best_epoch == 1
    assert result.losses[1].val_loss > result.losses[0].val_loss
    batch = collate([truncate(e, 40) for e in va], tok.pad_token_id)
    with torch.no_grad():
        assert float(completion_loss(result.model, batch)) == pytest.approx(result.losses[0].val_loss, abs=1e-4)
    assert not (tmp_path / "checkpoint" / "state.pt").exists()


def test_full_fine_tuning_updates_all_weights(base, tmp_path):
    model, tok = base
    lm = copy.deepcopy(model)
    w0 = lm.model.layers[0].mlp.down_proj.weight.detach().clone()
    cfg = TrainConfig(method="full", epochs=1, batch_size=4, max_length=32, learning_rate=1e-4)
    result = train(lm, tok, secret_examples(tok, range(4)), [], cfg, tmp_path, progress=False)
    assert result.steps == 1 and result.losses[0].val_loss is None and result.best_epoch == 1
    assert not torch.equal(result.model.model.layers[0].mlp.down_proj.weight, w0)
    save_artifact(result.model, tok, tmp_path / "model")
    assert (tmp_path / "model" / "config.json").is_file()


def test_accelerate_launch_two_processes(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    # `--cpu` goes through accelerate's simple launcher, which starts one process unless given an MPI
    # hostfile; `--multi_gpu` starts the processes with torchrun and ACCELERATE_USE_CPU=1 keeps them on
    # the CPU (gloo DDP), on machines with or without GPUs.
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "tests" / "accelerate_tiny_lora.py"),
           str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    done = sorted(p.name for p in out.glob("rank-*.done"))
    assert done == ["rank-0.done", "rank-1.done"]
    assert len(list(out.rglob("adapter_config.json"))) == 1
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    texts = [(out / d).read_text() for d in done]
    assert texts[0] == texts[1] and "world=2" in texts[0]  # same steps and summed tokens on both ranks


# -- learning curve from one run --------------------------------------------------------------

def test_nested_batches_keep_each_subset_in_its_own_batches():
    from tunewise.models.training.batches import nested_batches

    lengths = [(i * 7) % 23 + 1 for i in range(40)]
    batches, covered = nested_batches(lengths, [10, 20, 40], 4, seed=5)
    assert covered == [3, 6, 11]
    for end, n in zip([10, 20, 40], covered):
        assert sorted(i for b in batches[:n] for i in b) == list(range(end))
    assert batches[:3] == length_grouped_batches(lengths[:10], 4, seed=5)  # as a run on the subset alone


def test_wsd_schedule_holds_the_peak_then_decays():
    from tunewise.models.training.schedule import Branch, branches, lr_factor

    f = [lr_factor(s, total=10, warmup=2, schedule="wsd", decay_share=0.2) for s in range(10)]
    assert f == [0.0, 0.5, 1, 1, 1, 1, 1, 1, 1.0, 0.5]
    linear = [lr_factor(s, total=10, warmup=2, schedule="linear", decay_share=0.2) for s in range(10)]
    assert linear[2] == 1 and linear[-1] == 1 / 8
    assert branches([10, 20, 40], [3, 6, 16], 0.2, epochs=1) == [Branch(10, 2, 3), Branch(20, 5, 6)]
    assert branches([10, 20, 40], [3, 6, 16], 0.2, epochs=2)[-1] == Branch(40, 13, 16)


def test_one_minus_sqrt_decay_falls_faster_and_ends_where_linear_ends():
    from tunewise.models.training.schedule import Branch, branches, lr_factor

    f = [lr_factor(s, total=10, warmup=2, schedule="wsd", decay_share=0.4, decay_shape="1-sqrt") for s in range(10)]
    assert f[:7] == [0.0, 0.5, 1, 1, 1, 1, 1.0]
    assert f[7:] == pytest.approx([1 - 0.25 ** 0.5, 1 - 0.5 ** 0.5, 1 - 0.75 ** 0.5])
    linear = [lr_factor(s, total=10, warmup=2, schedule="wsd", decay_share=0.4) for s in range(10)]
    assert all(a < b for a, b in zip(f[7:], linear[7:]))  # lower all through the decay
    branch = branches([10, 20], [4, 8], 0.5, epochs=1, shape="1-sqrt")[0]
    assert branch == Branch(10, 2, 4, "1-sqrt")
    assert [branch.factor(s, 0.8) for s in (2, 3)] == pytest.approx([0.8, 0.8 * (1 - 0.5 ** 0.5)])


def test_a_decay_branch_is_the_run_on_its_subset_and_leaves_the_main_run_alone(base, tmp_path, monkeypatch):
    """The branch for the first 16 examples equals a WSD run on those 16 alone; the main run ends
    exactly as it would without branches."""
    import tunewise.models.train as train_module

    model, tok = base
    tr, va = secret_examples(tok, range(32), " kiwi"), secret_examples(tok, range(200, 202), " kiwi")
    cfg = TrainConfig(r=4, alpha=8, epochs=1, learning_rate=1e-3, batch_size=4, max_length=40, dtype="float32",
                      warmup_ratio=0.0, schedule="wsd", decay_share=0.5)
    nested = train(copy.deepcopy(model), tok, tr, va, cfg.model_copy(update={"nested_sizes": [16, 32]}),
                   tmp_path / "nested", progress=False)
    assert set(nested.branches) == {16} and nested.branch_steps == 2 and nested.steps == 8
    alone = train(copy.deepcopy(model), tok, tr[:16], va, cfg, tmp_path / "alone", progress=False)
    lora = {n: p for n, p in alone.model.named_parameters() if "lora_" in n}
    assert set(lora) == set(nested.branches[16])
    for name, value in nested.branches[16].items():
        assert torch.allclose(value, lora[name].detach(), atol=1e-6), name

    monkeypatch.setattr(train_module, "branches", lambda *args: [])
    plain = train(copy.deepcopy(model), tok, tr, va, cfg.model_copy(update={"nested_sizes": [16, 32]}),
                  tmp_path / "plain", progress=False)
    assert not plain.branches
    final = dict(nested.model.named_parameters())
    for name, p in plain.model.named_parameters():
        if "lora_" in name:
            assert torch.equal(p, final[name]), name
