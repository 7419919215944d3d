"""A new advantage estimator, one file: the sign of each sample's score against its group mean.

``algo.advantage: signed`` in a ``ppo`` or ``pg`` config once this module is imported (or listed as
an ``rlcustom.plugins`` entry point of your package). ``sequence_estimator`` turns a per-sample
function ``(scores [B], group_ids [B]) -> [B]`` into the uniform estimator (broadcast to the valid
tokens, no value targets); its options are explicit, so a misspelt one is an error.
"""
import torch

from rlcustom.algos.advantages import group_stats, sequence_estimator
from rlcustom.registry import ADV_ESTIMATORS


def signed_advantages(scores: torch.Tensor, group_ids: torch.Tensor, *, margin: float = 0.0) -> torch.Tensor:
    """+1 above the group mean (by more than ``margin``), -1 below, 0 otherwise."""
    count, total, _ = group_stats(scores, group_ids)
    diff = scores - total / count
    return torch.where(diff > margin, 1.0, torch.where(diff < -margin, -1.0, 0.0))


ADV_ESTIMATORS.register("signed")(sequence_estimator("signed", signed_advantages))
