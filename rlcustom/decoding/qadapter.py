"""Q-Adapter decoding: the customised policy from a frozen base LLM and its residual-Q LoRA.

"Q-Adapter: Customizing Pre-trained LLMs to New Preferences with Forgetting Mitigation".
The adapter model's logits are ``Q_theta(s, .)``, the base model (adapter disabled)
gives ``pi_1``, and the policy is (Eq. 4; Appendix B.2's inference snippet)

    pi~(a|s) ∝ exp( (Q_theta(s, a) + alpha0 * log pi_1(a|s)) / alpha ),

computed by :func:`rlcustom.algos.qadapter.qadapter_logits`. Appendix B.2 notes that
running the model twice (adapter on / off) cannot share a KV cache and proposes a joint
cache; :class:`QAdapterStep` goes further: base rows and adapter rows run in ONE
batched forward with one ``2B``-row KV cache (:class:`~rlcustom.decoding.multi.PairedLoRAStep`),
so the base weights are read once per token.

With a freshly initialised adapter (LoRA ``B = 0``) ``Q = h`` (the base logits), and
the output is ``(h + alpha0 * (h - logsumexp h)) / alpha = ((1 + alpha0) h - alpha0 lse) / alpha``:
per row a strictly increasing affine map of ``h`` when ``alpha > 0`` and ``alpha0 > -1``,
so greedy decoding equals the base model's (the argmax is preserved; in floating point
each operation is monotone non-decreasing, so no order can flip, and only exact ties
could be created, which the test checks does not happen).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import torch

from rlcustom.algos.qadapter import _check_alpha, qadapter_logits
from rlcustom.config import DecoderConfig, positive
from rlcustom.decoding.multi import CombinedStep, PairedLoRAStep
from rlcustom.decoding.registry_cli import check_adapter_dir, on_adapter, register_decoder, require

__all__ = ["QAdapterStep", "QAdapterOptions", "qadapter_decoder"]


class QAdapterStep(CombinedStep):
    """A :class:`~rlcustom.engines.base.StepModel` returning
    ``qadapter_logits(q_logits=adapted, base_logits=base, alpha, alpha0)`` per step.

    Args:
        peft_model: the frozen base model with the Q-Adapter LoRA (unmerged).
        alpha: ``alpha~ > 0`` (paper: 1.0). alpha0: ``lambda * alpha_1`` (paper: 0.01).
        adapter: adapter name; default the active one. mode: see :class:`PairedLoRAStep`.
    """

    def __init__(self, peft_model, alpha: float = 1.0, alpha0: float = 0.01, adapter: str | None = None,
                 mode: str = "auto") -> None:
        self.alpha, self.alpha0 = _check_alpha(alpha), float(alpha0)
        super().__init__(PairedLoRAStep(peft_model, adapter, mode=mode), self._combine)

    def _combine(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        base, adapted = parts
        return qadapter_logits(q_logits=adapted, base_logits=base, alpha=self.alpha, alpha0=self.alpha0)


@dataclass(frozen=True)
class QAdapterOptions(DecoderConfig):
    """``decoder.name: qadapter``: the customised policy of Eq. 4 from the engine's (base) model and its
    residual-Q LoRA adapter, base and adapter rows in one batched forward per step."""

    adapter: str | None = None  # the Q-Adapter LoRA directory over model.path (the qadapter trainer's OUTPUT_DIR/adapter)
    alpha: float | None = None  # alpha~ > 0, the entropy weight (null: 1.0, Table 3)
    alpha0: float | None = field(default=None, metadata=positive)  # alpha0 = lambda * alpha_1 (null: 0.01, Table 3)
    mode: Literal["auto", "slice", "peft"] | None = None  # how base and adapter rows share one forward (null: auto)

    def check(self) -> None:
        super().check()
        require(self, "adapter", "a LoRA adapter directory")

    def check_files(self) -> None:
        check_adapter_dir(self)

    def load(self, factory: Callable[..., Any], base_model: Any, tokenizer: Any = None) -> Callable[[], Any]:
        alpha = 1.0 if self.alpha is None else self.alpha
        alpha0 = 0.01 if self.alpha0 is None else self.alpha0
        fixed = on_adapter(base_model, self.adapter, factory(alpha=alpha, alpha0=alpha0, mode=self.mode or "auto"),
                           "qadapter")
        return lambda: fixed


@register_decoder("qadapter", options=QAdapterOptions)
def qadapter_decoder(alpha: float = 1.0, alpha0: float = 0.01, adapter: str | None = None, *, mode: str = "auto"):
    """Factory for the ``hf`` engine whose model is the peft Q-Adapter model.

    Kwargs (also the ``decoder=qadapter`` config/CLI signature):
        alpha: ``alpha~ > 0`` (default 1.0, Table 3). alpha0: default 0.01 (Table 3).
        adapter: adapter name, default the active one.
        mode: ``"auto"`` | ``"slice"`` | ``"peft"`` (see :mod:`rlcustom.decoding.multi`).

    Returns ``factory(model) -> QAdapterStep``. To decode with a saved adapter, build the
    engine on ``PeftModel.from_pretrained(base, path)``.
    """
    _check_alpha(alpha)

    def factory(model) -> QAdapterStep:
        return QAdapterStep(model, alpha=alpha, alpha0=alpha0, adapter=adapter, mode=mode)

    return factory
