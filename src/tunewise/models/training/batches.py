"""Training examples to batches: truncation, length-grouped (and nested) batch order, collation."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

MEGA_BATCH = 50  # length-sorting window, in batches

Item = tuple[list[int], int]  # (token ids, prompt length)


@dataclass
class Example:
    """One training item: the loss is taken on `completion_ids` only."""

    prompt_ids: list[int]
    completion_ids: list[int]


def truncate(ex: Example, max_length: int) -> Item:
    """(token ids, prompt length): the completion is kept whole when it fits with one prompt token,
    the prompt is cut from the left; an over-long completion is cut from the right."""
    prompt, completion = list(ex.prompt_ids), list(ex.completion_ids)
    keep_prompt = 1 if prompt else 0  # the first completion token is predicted from the token before it
    if len(completion) > max_length - keep_prompt:
        completion = completion[:max_length - keep_prompt]
    room = max_length - len(completion)
    if len(prompt) > room:
        prompt = prompt[len(prompt) - room:]
    return prompt + completion, len(prompt)


def prepare(examples: list[Example], max_length: int) -> list[Item]:
    """Truncated items, dropping those left without a loss token."""
    items = [truncate(ex, max_length) for ex in examples]
    return [(ids, p) for ids, p in items if len(ids) - max(p, 1) > 0]


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Seeded shuffle, sort by length within mega-batches, cut into batches, shuffle the batches
    and put the longest first (so an out-of-memory shows at once)."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = MEGA_BATCH * batch_size
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start:start + mega], key=lambda i: -lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    if batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def nested_batches(lengths: list[int], ends: list[int], batch_size: int,
                   seed: int) -> tuple[list[list[int]], list[int]]:
    """Batches over nested subsets: items [0, ends[0]) first, then [ends[0], ends[1]), and so on,
    each segment length-grouped on its own, so that the first k segments' batches hold exactly the
    k-th subset. Returns the batches and, per subset, how many batches cover it.

    The first segment is grouped with the seed a one-subset run uses, so it batches alike."""
    batches, covered, start = [], [], 0
    for k, end in enumerate(ends):
        segment = length_grouped_batches(lengths[start:end], batch_size, seed + k)
        batches += [[start + i for i in b] for b in segment]
        covered.append(len(batches))
        start = end
    return batches, covered


def collate(items: list[Item], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids and mask, plus the flat positions that carry loss and their next tokens."""
    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    index, targets = [], []
    for b, (ids, p) in enumerate(items):
        n = len(ids)
        input_ids[b, :n] = torch.tensor(ids, dtype=torch.long)
        mask[b, :n] = 1
        first = max(p, 1)
        index.extend(range(b * width + first - 1, b * width + n - 1))
        targets.extend(ids[first:n])
    return {"input_ids": input_ids, "attention_mask": mask,
            "loss_index": torch.tensor(index, dtype=torch.long), "targets": torch.tensor(targets, dtype=torch.long)}


class BatchList(torch.utils.data.Sampler):
    """A fixed list of index batches (a batch sampler accelerate can shard)."""

    def __init__(self, batches: list[list[int]], batch_size: int):
        self.batches, self.batch_size, self.drop_last = batches, batch_size, False

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class Items(torch.utils.data.Dataset):
    def __init__(self, items: list[Item]):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]
