"""A new guided decoder, one file: contrastive decoding (Li et al. 2023, "Contrastive Decoding: Open-ended Text
Generation as Optimization"). The engine's model (the expert) and a weaker model sharing its tokenizer (the
amateur) decode side by side; each step scores the tokens the expert finds plausible by how much more the
expert likes them than the amateur.

``rlcustom generate CONFIG decoder.name=contrastive decoder.amateur=DIR`` once this module is imported (list it
as an ``rlcustom.plugins`` entry point of your package). The options class types the ``decoder:`` keys (the
config's validation and the configuration reference read it); nothing else is edited.
"""
import math
from dataclasses import dataclass, field

import torch

from rlcustom.config import DecoderConfig, bounds
from rlcustom.decoding.multi import CombinedStep, TwoModelStep
from rlcustom.decoding.registry_cli import register_decoder, require


def contrastive_scores(expert: torch.Tensor, amateur: torch.Tensor, alpha: float) -> torch.Tensor:
    """``log p_EXP - log p_AMA`` on ``V_head = {x : p_EXP(x) >= alpha * max_w p_EXP(w)}``, -inf elsewhere
    (Eq. 2-4); ``[B, V]`` next-token logits of each model in, scores to decode from out."""
    lp_exp, lp_ama = expert.log_softmax(-1), amateur.log_softmax(-1)
    head = lp_exp >= lp_exp.max(-1, keepdim=True).values + math.log(alpha)
    return torch.where(head, lp_exp - lp_ama, torch.full_like(lp_exp, float("-inf")))


@dataclass(frozen=True)
class ContrastiveOptions(DecoderConfig):
    """``decoder.name: contrastive``: the engine's model is the expert."""

    amateur: str | None = None  # the amateur model (alias, directory or cached hub id), same tokenizer as the expert
    alpha: float = field(default=0.1, metadata=bounds(gt=0, le=1))  # plausible: p >= alpha * max p (1: greedy)

    def check(self) -> None:  # keys that go together: before any model loads
        super().check()
        require(self, "amateur", "the amateur model")

    def load(self, factory, base_model, tokenizer=None):  # the amateur, loaded once
        from rlcustom.models.loading import load_causal_lm

        amateur = load_causal_lm(self.amateur).eval()
        return lambda: factory(amateur, alpha=self.alpha)


@register_decoder("contrastive", options=ContrastiveOptions)
def contrastive_decoder(amateur, alpha: float = 0.1):
    """``factory(expert) -> StepModel``: the two models with their KV caches, scored per step."""

    def factory(expert):
        pair = TwoModelStep([expert, amateur.to(next(expert.parameters()).device)])
        return CombinedStep(pair, lambda logits: contrastive_scores(*logits, alpha))

    return factory
