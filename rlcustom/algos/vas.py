"""Value Augmented Sampling (VAS): next-token scores from a frozen LLM and value estimators.

Han, Shenfeld, Srivastava, Kim, Agrawal, "Value Augmented Sampling for Language
Model Alignment and Personalization", 2024.

The KL-constrained optimum (Eq. 2, with Q rewritten as the value of the next state,
Eq. 3) is ``pi(x | s) ∝ pi_0(x | s) exp(beta * V(s ⊕ x))`` (Eq. 4). Evaluating the
value estimator on all ``|V|`` children is too expensive, so VAS scores only the ``k``
children with the highest ``pi_0`` probability and gives every other token the mean
value of those ``k`` (Eq. 5):

    score(x) = log pi_0(x | s) + beta * V(s ⊕ x)     x in top-k
    score(x) = log pi_0(x | s) + beta * mean_topk V  otherwise,

and samples from ``softmax(score)``. The functions here return those *unnormalised*
log-scores; any sampler (temperature, top-p, argmax) can be applied afterwards.
Pure math on tensors: the decoding with models (KV-cached value models, step models,
the ``vas`` decoder) is :mod:`rlcustom.decoding.vas`.

API for several attributes (Section 4.2, "performing VAS with a linear combination
of the respective Value estimators"): combine first with :func:`compose_values`
(``sum_j beta_j * V_j``, betas per request allowed), then call :func:`vas_scores`
with ``beta=1``. Because Eq. 5's fill-in value is a mean, which is linear, this is
the same as applying Eq. 5 with the combined value.

``beta`` is a Python number, a 0-d tensor, or a ``[B]`` tensor (one beta per request,
for fine-grained per-user control, Section 4.3). Any real beta is accepted (negative
steers away from the reward).

Black-box mode (Section 4.4, GPT-3.5 through an API exposing only the top-5 log-probs):
:func:`vas_blackbox_scores` re-scores only the returned top-k tokens and renormalises
over them.
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

__all__ = ["topk_children", "vas_scores", "compose_values", "vas_blackbox_scores"]


def _beta_column(beta: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor | float:
    """A Python number stays a number; a tensor becomes ``[B, 1]`` (from 0-d or ``[B]``)."""
    if isinstance(beta, torch.Tensor):
        if beta.dim() == 0:
            return beta.to(device=like.device, dtype=like.dtype).reshape(1, 1)
        if beta.dim() == 1 and beta.shape[0] == batch:
            return beta.to(device=like.device, dtype=like.dtype).unsqueeze(1)
        raise ValueError(f"beta must be a number, a 0-d tensor or a [B]={batch} tensor; got shape {tuple(beta.shape)}")
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
        raise TypeError(f"beta must be a real number or a tensor; got {type(beta).__name__}")
    return float(beta)


def _check_topk(topk_ids: torch.Tensor, topk_values: torch.Tensor, batch: int) -> None:
    if topk_ids.dim() != 2 or topk_ids.shape[0] != batch:
        raise ValueError(f"topk_ids must be [B={batch}, k]; got {tuple(topk_ids.shape)}")
    if topk_values.shape != topk_ids.shape:
        raise ValueError(f"topk_values must match topk_ids {tuple(topk_ids.shape)}; got {tuple(topk_values.shape)}")
    if topk_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"topk_ids must be an integer (long) tensor; got {topk_ids.dtype}")
    if topk_ids.shape[1] == 0:
        raise ValueError("k must be at least 1")


def topk_children(base_logprobs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most likely next tokens under ``pi_0`` (the children VAS evaluates, Section 3.3).

    Args:
        base_logprobs: ``[B, V]`` next-token log-probabilities (or logits) of ``pi_0``.
        k: number of children, ``1 <= k <= V``.

    Returns:
        ``(topk_ids [B, k] long, topk_logprobs [B, k])``, most likely first.
    """
    if base_logprobs.dim() != 2:
        raise ValueError(f"base_logprobs must be [B, V]; got {tuple(base_logprobs.shape)}")
    V = base_logprobs.shape[1]
    if not 1 <= int(k) <= V:
        raise ValueError(f"k must be in [1, V={V}]; got {k}")
    vals, ids = torch.topk(base_logprobs, int(k), dim=-1)
    return ids, vals


def vas_scores(
    base_logprobs: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_values: torch.Tensor,
    beta: float | torch.Tensor,
) -> torch.Tensor:
    """VAS next-token log-scores over the full vocabulary (VAS Eq. 5).

    Args:
        base_logprobs: ``[B, V]`` ``log pi_0(x | s)``.
        topk_ids: ``[B, k]`` long, the evaluated children (normally from
            :func:`topk_children`); ids must be distinct within a row.
        topk_values: ``[B, k]`` value estimates ``V(s ⊕ x)`` of those children
            (for several attributes: the output of :func:`compose_values`, with ``beta=1``).
        beta: number, 0-d tensor or ``[B]`` tensor.

    Returns:
        ``[B, V]`` scores ``log pi_0 + beta * V_x`` on the top-k tokens and
        ``log pi_0 + beta * mean(V_topk)`` elsewhere; sample from ``softmax(scores)``.
        ``beta = 0`` returns ``base_logprobs`` unchanged in value; ``-inf`` entries of
        ``base_logprobs`` (disallowed tokens) stay ``-inf``.
    """
    if base_logprobs.dim() != 2:
        raise ValueError(f"base_logprobs must be [B, V]; got {tuple(base_logprobs.shape)}")
    B, V = base_logprobs.shape
    _check_topk(topk_ids, topk_values, B)
    if topk_ids.shape[1] > V:
        raise ValueError(f"k={topk_ids.shape[1]} exceeds the vocabulary size V={V}")
    topk_ids = topk_ids.long()
    vals = topk_values.to(base_logprobs.dtype)
    b = _beta_column(beta, B, base_logprobs)
    mean_v = vals.mean(dim=-1, keepdim=True)  # \bar V(s_t), Eq. 5
    scores = base_logprobs + b * mean_v  # every token gets the mean ...
    top = base_logprobs.gather(-1, topk_ids) + b * vals  # ... the top-k their own value
    return scores.scatter(-1, topk_ids, top)


def compose_values(
    values: Sequence[torch.Tensor],
    betas: Sequence[float | torch.Tensor],
) -> torch.Tensor:
    """Linear combination ``sum_j beta_j * V_j`` of several value estimators' outputs on
    the same children (VAS Section 4.2: the value is linear in the reward, so a
    weighted sum of rewards is served by the weighted sum of their value estimators).

    Pass the result to :func:`vas_scores` with ``beta=1``.

    Args:
        values: non-empty sequence of ``[B, k]`` tensors, one per attribute.
        betas: same length; each a number, 0-d tensor or ``[B]`` tensor.

    Returns:
        ``[B, k]`` combined values.
    """
    if isinstance(values, torch.Tensor) or isinstance(betas, torch.Tensor):
        raise TypeError("values and betas must be sequences (lists/tuples) with one entry per attribute")
    values = list(values)
    betas = list(betas)
    if not values:
        raise ValueError("values must hold at least one [B, k] tensor")
    if len(values) != len(betas):
        raise ValueError(f"got {len(values)} value tensors but {len(betas)} betas")
    first = values[0]
    if first.dim() != 2:
        raise ValueError(f"each value tensor must be [B, k]; got {tuple(first.shape)}")
    out = None
    for j, (v, bj) in enumerate(zip(values, betas)):
        if v.shape != first.shape:
            raise ValueError(f"values[{j}] has shape {tuple(v.shape)}, expected {tuple(first.shape)}")
        term = _beta_column(bj, first.shape[0], v) * v
        out = term if out is None else out + term
    assert out is not None
    return out


def vas_blackbox_scores(
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    topk_values: torch.Tensor,
    beta: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """VAS when only the top-k ids and log-probs of ``pi_0`` are known (VAS Section 4.4).

    The distribution is restricted to the ``k`` returned tokens and renormalised:

        scores_i = log_softmax_i( log pi_0(x_i | s) + beta * V(s ⊕ x_i) ),  i = 1..k

    so ``exp(scores)`` sums to 1 over the k candidates (Eq. 4 restricted to the top-k;
    tokens outside the top-k cannot be sampled, so Eq. 5's mean fill-in is not needed).

    Args:
        topk_ids: ``[B, k]`` long token ids returned by the API.
        topk_logprobs: ``[B, k]`` their ``log pi_0`` (need not sum to 1 over the k).
        topk_values: ``[B, k]`` value estimates of the children.
        beta: number, 0-d tensor or ``[B]`` tensor.

    Returns:
        ``(ids, scores)``, both ``[B, k]``: ``ids`` is ``topk_ids`` (unchanged order);
        sample an index from ``softmax(scores)`` (or take its argmax) and emit
        ``ids[b, index]``.
    """
    if topk_logprobs.dim() != 2:
        raise ValueError(f"topk_logprobs must be [B, k]; got {tuple(topk_logprobs.shape)}")
    B = topk_logprobs.shape[0]
    _check_topk(topk_ids, topk_values, B)
    if topk_logprobs.shape != topk_ids.shape:
        raise ValueError(f"topk_logprobs must match topk_ids {tuple(topk_ids.shape)}; got {tuple(topk_logprobs.shape)}")
    b = _beta_column(beta, B, topk_logprobs)
    raw = topk_logprobs + b * topk_values.to(topk_logprobs.dtype)
    return topk_ids, torch.log_softmax(raw, dim=-1)
