"""Chat messages -> prompt text -> token ids, the same way for a local model and for a server scored
through `/v1/completions` (which takes raw text or token ids, never chat messages)."""

from __future__ import annotations

from tunewise.models.backend import Messages

PLAIN_END = "\n"  # closes an answer when there is no chat template: tells 'neg' from 'negative'


class ChatFormat:
    """A tokenizer's chat template; plain 'Role: text' turns when there is no tokenizer or template."""

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer
        self.end = self._end_of_turn()

    def render(self, messages: Messages, *, add_generation_prompt: bool) -> str:
        """Messages -> prompt text with the model's chat template (plain text when it has none)."""
        chat = [{"role": r, "content": c} for r, c in messages]
        if self.tokenizer is not None and self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(chat, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        text = "\n\n".join(f"{r.title()}: {c}" for r, c in messages)
        return text + ("\n\nAssistant:" if add_generation_prompt else "")

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise ValueError("no tokenizer: this chat format renders text only")
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _end_of_turn(self) -> str:
        """The text that closes an assistant turn (so 'neg' and 'negative' are told apart)."""
        if not self.templated:
            return PLAIN_END if self.tokenizer is None else (self.tokenizer.eos_token or PLAIN_END)
        probe = self.render([("user", "x"), ("assistant", "LABEL")], add_generation_prompt=False)
        tail = probe.split("LABEL", 1)[1] if "LABEL" in probe else ""
        return tail.rstrip("\n") or (self.tokenizer.eos_token or "")

    def split_prompt(self, shared: Messages, rest: Messages) -> tuple[list[int], list[int]]:
        """Token ids of the shared prefix and of the rest, tokenised separately at a turn boundary."""
        full = self.render(shared + rest, add_generation_prompt=True)
        prefix = self.render(shared, add_generation_prompt=False) if shared else ""
        if not full.startswith(prefix):  # template does not compose turn by turn: no sharing
            return [], self.encode(full)
        return self.encode(prefix), self.encode(full[len(prefix):])

    @property
    def templated(self) -> bool:
        return self.tokenizer is not None and bool(self.tokenizer.chat_template)

    def answer(self, label: str) -> str:
        """The text of an assistant answer `label`, as it follows the rendered prompt."""
        return ("" if self.templated else " ") + label + self.end

    def label_ids(self, labels: list[str]) -> list[list[int]]:
        return [self.encode(self.answer(label)) for label in labels]
