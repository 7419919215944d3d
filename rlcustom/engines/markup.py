"""Observation turns as token deltas: the chat template's turn markup around one new message.

A multi-turn episode never re-tokenises what came before: after a model turn (the sampled ids,
kept as they are) only the *new* text is tokenised: the end of the model's turn (when it did not
sample its end-of-turn token itself), the observation message in the template's markup, and the
header of the next assistant turn. The delta comes from the template itself: render a short
conversation ending in an assistant turn, render it again with the observation message and the
generation prompt, and keep what the second rendering adds (templates are prefix-stable for an
appended message; one that is not is refused with a clear error).
"""
from __future__ import annotations

from typing import Any

__all__ = ["TurnMarkup"]

_SENTINEL = "\u2063RLCUSTOM-TURN\u2063"  # an assistant message's content; never in real text
_USER = {"role": "user", "content": "x"}


class TurnMarkup:
    """Token ids of an observation turn for ``tokenizer``; ``role`` is the observation's chat role.

    Without a chat template (or with ``chat_template=False``) an observation is plain text on its
    own lines: ``"\\n" + observation + "\\n"``.
    """

    def __init__(self, tokenizer: Any, role: str = "user", chat_template: bool = True) -> None:
        self.tok = tokenizer
        self.role = role
        self.templated = bool(chat_template and getattr(tokenizer, "chat_template", None))
        if self.templated:
            self.turn_end(check=True)  # a template that cannot render an appended turn fails here, not mid-run

    def _render(self, messages: list[dict], gen: bool) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

    def turn_end(self, check: bool = False) -> str:
        """The text that closes an assistant turn in this template (e.g. ``<|im_end|>\\n``)."""
        prefix = self._render([_USER, {"role": "assistant", "content": _SENTINEL}], False)
        if _SENTINEL not in prefix:
            raise ValueError("the chat template drops an assistant message's content; multi-turn rollouts "
                             "need a template that renders earlier assistant turns")
        return prefix[prefix.index(_SENTINEL) + len(_SENTINEL):]

    def text(self, observation: str, turn_closed_by: str | None) -> str:
        """The markup text that follows a model turn. ``turn_closed_by``: the text of the model turn's
        last token when it sampled an end-of-turn token (that much of the turn end is not added again)."""
        if not self.templated:
            return "\n" + observation + "\n"
        history = [_USER, {"role": "assistant", "content": _SENTINEL}]
        prefix = self._render(history, False)
        full = self._render(history + [{"role": self.role, "content": observation}], True)
        if not full.startswith(prefix):
            raise ValueError(f"the chat template renders an appended {self.role!r} message by changing earlier "
                             "turns; observation tokens cannot be appended as a delta")
        end = prefix[prefix.index(_SENTINEL) + len(_SENTINEL):]
        if turn_closed_by and end.startswith(turn_closed_by):
            end = end[len(turn_closed_by):]
        return end + full[len(prefix):]

    def ids(self, observation: str, last_token: int | None, eos_ids: set[int]) -> list[int]:
        """Token ids to append after a model turn whose last sampled token is ``last_token``."""
        closed = self.tok.decode([last_token]) if last_token is not None and last_token in eos_ids else None
        return list(self.tok(self.text(observation, closed), add_special_tokens=False)["input_ids"])
