"""KL to the SFT model recorded while decoding (DeRa sweep): per-sample k1 and exact token-wise KL
from the logits each step already computes (see :mod:`rlcustom.eval.dera`)."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

__all__ = ["KLRecorder", "decode_with_kl"]


class KLRecorder:
    """A :class:`~rlcustom.engines.base.StepModel` around a
    :class:`~rlcustom.decoding.multi.CombinedStep` whose parts include the SFT logits
    (``inner.last[sft_index]``). It returns the inner logits unchanged and records, per
    step, ``KL(pi(.) || pi_sft(.))`` of every row (exact, over the vocabulary) and
    ``log pi_sft`` of the token the engine fed back (the last step's token is taken by
    :meth:`finish`, since the engine does not feed it)."""

    def __init__(self, inner, sft_index: int) -> None:
        self.inner, self.sft_index = inner, sft_index
        self.kl: list[torch.Tensor] = []
        self.sft_lp: list[torch.Tensor] = []
        self.rows = 0
        self._lps: torch.Tensor | None = None

    def _record(self, logits: torch.Tensor) -> torch.Tensor:
        lp = torch.log_softmax(logits.float(), -1)
        lps = torch.log_softmax(self.inner.last[self.sft_index].float(), -1)
        p = lp.exp()
        diff = torch.where(p > 0, lp - lps, torch.zeros_like(lp))  # 0 * log 0 = 0
        self.kl.append((p * diff).sum(-1).cpu())
        self._lps = lps
        return logits

    def _take(self, tokens: torch.Tensor) -> None:
        assert self._lps is not None
        tok = tokens.reshape(-1, 1).to(self._lps.device)
        self.sft_lp.append(self._lps.gather(-1, tok).squeeze(-1).cpu())

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.rows = int(input_ids.shape[0])
        return self._record(self.inner.start(input_ids, attention_mask))

    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        self._take(tokens)
        return self._record(self.inner.advance(tokens))

    def finish(self, response_ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(kl_tokenwise [rows], sft_logprob_sum [rows])`` over each row's response tokens."""
        T = len(self.kl)
        last = [r[T - 1] if len(r) == T else 0 for r in response_ids]
        self._take(torch.tensor(last, dtype=torch.long))
        kl, slp = torch.stack(self.kl, 1).double(), torch.stack(self.sft_lp, 1).double()  # [rows, T]
        mask = torch.zeros_like(kl)
        for i, r in enumerate(response_ids):
            mask[i, : len(r)] = 1.0
        return (kl * mask).sum(1), (slp * mask).sum(1)


def decode_with_kl(engine, prompt_ids, params, make_inner: Callable[[], Any], sft_index: int):
    """Generate with ``make_inner()`` steps wrapped in :class:`KLRecorder`; returns
    ``(rollouts, kl_k1 [N], kl_tokenwise [N])``."""
    recs: list[KLRecorder] = []

    def factory(_model):
        rec = KLRecorder(make_inner(), sft_index)
        recs.append(rec)
        return rec

    ro = engine.generate(prompt_ids, params, decoder=factory)
    k1, tw, s = [], [], 0
    for rec in recs:  # the engine makes one step per chunk of rows, in order
        rows = ro.response_ids[s : s + rec.rows]
        tokwise, sft_sum = rec.finish(rows)
        lam_sum = torch.tensor([math.fsum(lp) for lp in ro.logprobs[s : s + rec.rows]], dtype=torch.float64)
        k1.append(lam_sum - sft_sum)
        tw.append(tokwise)
        s += rec.rows
    assert s == len(ro), f"recorded {s} rows for {len(ro)} samples"
    return ro, torch.cat(k1), torch.cat(tw)
