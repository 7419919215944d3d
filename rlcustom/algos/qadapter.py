"""Q-Adapter: learning a residual Q-function from preference data on top of a frozen LLM.

"Q-Adapter: Customizing Pre-trained LLMs to New Preferences with Forgetting
Mitigation" (ICLR 2025 submission; builds on residual Q-learning, Li et al. 2023).

The adapter ``Q_theta(s, .)`` (e.g. a LoRA model's logits) is a residual soft
Q-function. The pre-trained LLM ``pi_1`` stays frozen. The customised policy is (Eq. 4)

    pi~(a|s) ∝ exp( (Q_theta(s, a) + alpha0 * log pi_1(a|s)) / alpha ),

with ``alpha0 = lambda * alpha_1`` (Section 4) and ``alpha = alpha~``. The reward implied
by ``Q_theta`` (Corollary 4.1, Eq. 9) is

    r(s_t, a_t) = Q_theta(s_t, a_t)
                  - gamma * alpha * logsumexp_a'( (Q_theta(s_{t+1}, a') + alpha0 log pi_1(a'|s_{t+1})) / alpha ),

and ``Q_theta`` is trained with a Bradley-Terry loss on these rewards plus an L2
penalty (Eq. 10). Paper defaults (Table 3): alpha~ = 1.0, alpha0 = 0.01, beta = 0.1, gamma = 1.0.

The Bradley-Terry logit's scale (``bt_scale``, :func:`bt_temperature`): ``"paper"`` uses Eq. 10's
``R_w - R_l`` as written; ``"official"`` divides it by ``L - 1``, ``L`` the padded sequence length
(prompt + reply columns) of the batch, as the authors' released code does (it divides the stacked
(chosen, rejected) reward sums by the number of shifted positions before its cross-entropy). The
paper's beta = 0.1 was tuned with that temperature: it makes the preference term's gradient per
token about ``1/(L-1)`` as large, so at the same beta the L2 penalty weighs far more.

Applied by the learner objective ``qadapter`` (:mod:`rlcustom.objectives.qadapter`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rlcustom.algos.masked import masked_mean, masked_sum

__all__ = ["residual_rewards", "qadapter_loss", "qadapter_logits", "bt_temperature", "BT_SCALES"]

BT_SCALES = ("paper", "official")


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha (the entropy weight alpha~) must be finite and > 0; got {alpha}")
    return alpha


def bt_temperature(bt_scale: str, seq_len: int) -> float:
    """The divisor ``tau`` of the Bradley-Terry logit ``(R_w - R_l) / tau`` in :func:`qadapter_loss`.

    ``"paper"``: ``tau = 1`` (Eq. 10 as printed). ``"official"``: ``tau = L - 1`` with ``L = seq_len``,
    the padded length of the batch's rows (prompt + reply columns): the authors' code divides the
    reward sums by the length of its shifted ``[B, L-1]`` per-token reward tensor.
    """
    if bt_scale not in BT_SCALES:
        raise ValueError(f"bt_scale must be one of {', '.join(BT_SCALES)}; got {bt_scale!r}")
    if bt_scale == "paper":
        return 1.0
    if int(seq_len) < 2:
        raise ValueError(f"bt_scale='official' needs a padded sequence length >= 2; got {seq_len}")
    return float(int(seq_len) - 1)


def residual_rewards(
    q_logits: torch.Tensor,
    base_logprobs: torch.Tensor,
    actions: torch.Tensor,
    mask: torch.Tensor,
    alpha: float = 1.0,
    alpha0: float = 0.01,
    gamma: float = 1.0,
) -> torch.Tensor:
    """Per-token rewards implied by the residual Q-function (Q-Adapter Eq. 9).

    Args:
        q_logits: ``[B, T, V]`` ``Q_theta(s_t, .)``: position ``t`` belongs to the state
            *before* ``actions[:, t]`` is generated (the usual shifted-logits layout).
        base_logprobs: ``[B, T, V]`` ``log pi_1(. | s_t)`` of the frozen pre-trained
            LLM (log-softmaxed); detached here, ``pi_1`` is not trained.
        actions: ``[B, T]`` long, the response tokens ``a_t``.
        mask: ``[B, T]`` 1 on response tokens. Right padding is the normal case; an
            interior 0 is skipped (the next-state term of a valid ``t`` is taken from
            the next *valid* position, as :mod:`rlcustom.algos.gae` does).
        alpha: ``alpha~`` > 0; alpha0: ``alpha0 = lambda * alpha_1``; gamma: discount.

    Returns:
        ``[B, T]``: ``r_t = Q(s_t, a_t) - gamma * Vsoft(s_{t+1})`` with
        ``Vsoft(s) = alpha * logsumexp((Q(s, .) + alpha0 * log pi_1(.|s)) / alpha)``;
        ``Vsoft = 0`` after the last valid position (terminal state), ``r = 0`` where
        ``mask`` is 0. Differentiable w.r.t. ``q_logits``. The logits at padded
        positions must be finite (any finite garbage is fine); padded ``actions``
        may hold anything (e.g. -100).
    """
    if q_logits.dim() != 3:
        raise ValueError(f"q_logits must be [B, T, V]; got {tuple(q_logits.shape)}")
    if base_logprobs.shape != q_logits.shape:
        raise ValueError(f"base_logprobs must match q_logits {tuple(q_logits.shape)}; got {tuple(base_logprobs.shape)}")
    B, T, _ = q_logits.shape
    if actions.shape != (B, T) or mask.shape != (B, T):
        raise ValueError(f"actions and mask must be [B={B}, T={T}]; got {tuple(actions.shape)}, {tuple(mask.shape)}")
    alpha = _check_alpha(alpha)
    valid = mask.bool()
    safe_actions = torch.where(valid, actions.long(), torch.zeros_like(actions, dtype=torch.long))
    q_sa = q_logits.gather(-1, safe_actions.unsqueeze(-1)).squeeze(-1)  # [B, T]
    # alpha0 = 0 drops pi_1 entirely (and avoids 0 * -inf on disallowed tokens).
    aug = q_logits if float(alpha0) == 0.0 else q_logits + float(alpha0) * base_logprobs.detach().to(q_logits.dtype)
    v_soft = alpha * torch.logsumexp(aug / alpha, dim=-1)  # [B, T]: Vsoft(s_t)
    zero = torch.zeros((), dtype=q_sa.dtype, device=q_sa.device)

    # next_v[:, t] = Vsoft at the next valid position after t, 0 if none (terminal).
    carry = torch.zeros(B, dtype=q_sa.dtype, device=q_sa.device)
    next_cols: list[torch.Tensor] = []
    for t in range(T - 1, -1, -1):
        next_cols.append(carry)
        carry = torch.where(valid[:, t], v_soft[:, t], carry)
    next_v = torch.stack(next_cols[::-1], dim=1) if T > 0 else torch.zeros_like(q_sa)
    r = q_sa - float(gamma) * next_v
    return torch.where(valid, r, zero)


def qadapter_loss(
    chosen_rewards: torch.Tensor,
    chosen_mask: torch.Tensor,
    rejected_rewards: torch.Tensor,
    rejected_mask: torch.Tensor,
    beta: float = 0.1,
    length_normalize: bool = False,
    bt_temperature: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Bradley-Terry loss on residual rewards plus an L2 penalty (Q-Adapter Eq. 10):

        loss = mean_pairs[ -log sigmoid((R_w - R_l) / tau) ] + beta * mean_{valid tokens of both}(r^2)

    ``R = sum_t r_t`` over the response's valid tokens (Eq. 10), or the mean
    (``length_normalize=True``, an option not in the paper). ``tau = bt_temperature``: 1 is Eq. 10
    (``bt_scale: paper``); ``L - 1`` (:func:`bt_temperature` with ``bt_scale: official``) is the
    authors' released code, which divides the logit by the padded sequence length.

    Differences from the paper (the rlcustom spec is followed): Eq. (10) writes the
    penalty *per pair* as a sum over time steps, "||r_2||_2^2 = sum_{t=1}^T
    ||r_2(s_t^w, a_t^w)||^2 + ||r_2(s_t^l, a_t^l)||^2", i.e. it grows with response
    length; here it is the mean of ``r^2`` over all valid tokens of the chosen and
    rejected responses of the batch (length-independent, so ``beta`` transfers across
    lengths). Both chosen and rejected tokens are regularised, as in the paper.

    Args:
        chosen_rewards, rejected_rewards: ``[B, T_w]``, ``[B, T_l]`` from :func:`residual_rewards`.
        chosen_mask, rejected_mask: same shapes, 1 on valid tokens.
        beta: L2 weight (paper: 0.1).
        bt_temperature: ``tau`` > 0, the Bradley-Terry logit's divisor (1 = the paper).

    Returns:
        ``(loss, stats)``; stats: ``accuracy`` (fraction of pairs with ``R_w > R_l``),
        ``bt_loss``, ``l2_loss`` (``beta * mean r^2``), ``margin`` (mean ``R_w - R_l``, before ``/ tau``),
        ``chosen_reward``, ``rejected_reward`` (mean ``R``), all detached.
    """
    for name, r, m in (("chosen", chosen_rewards, chosen_mask), ("rejected", rejected_rewards, rejected_mask)):
        if r.dim() != 2 or m.shape != r.shape:
            raise ValueError(f"{name}_rewards and {name}_mask must be the same [B, T]; got {tuple(r.shape)}, {tuple(m.shape)}")
    if chosen_rewards.shape[0] != rejected_rewards.shape[0]:
        raise ValueError(f"chosen and rejected batch sizes differ: {chosen_rewards.shape[0]} vs {rejected_rewards.shape[0]}")
    if float(beta) < 0:
        raise ValueError(f"beta must be >= 0; got {beta}")
    tau = float(bt_temperature)
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"bt_temperature must be finite and > 0; got {bt_temperature}")
    cw, cl = chosen_mask.bool(), rejected_mask.bool()
    rw = torch.where(cw, chosen_rewards, torch.zeros_like(chosen_rewards))
    rl = torch.where(cl, rejected_rewards, torch.zeros_like(rejected_rewards))
    dt = rw.dtype
    if length_normalize:
        score_w = masked_mean(rw, cw.to(dt), dim=-1)
        score_l = masked_mean(rl, cl.to(dt), dim=-1)
    else:
        score_w = masked_sum(rw, cw, dim=-1)
        score_l = masked_sum(rl, cl, dim=-1)
    margin = score_w - score_l
    bt = -F.logsigmoid(margin / tau).mean()
    n_tok = (cw.sum() + cl.sum()).to(dt).clamp(min=1.0)
    l2 = float(beta) * ((rw * rw).sum() + (rl * rl).sum()) / n_tok
    loss = bt + l2
    with torch.no_grad():
        stats = {
            "accuracy": (margin > 0).to(dt).mean(),
            "bt_loss": bt.detach(),
            "l2_loss": l2.detach(),
            "margin": margin.detach().mean(),
            "chosen_reward": score_w.detach().mean(),
            "rejected_reward": score_l.detach().mean(),
        }
    return loss, stats


def qadapter_logits(
    q_logits: torch.Tensor,
    base_logits: torch.Tensor,
    alpha: float = 1.0,
    alpha0: float = 0.01,
) -> torch.Tensor:
    """Logits of the customised policy (Q-Adapter Eq. 4; the snippet of Appendix B.2):

        (Q_theta(s, .) + alpha0 * log_softmax(base_logits)) / alpha,

    so ``softmax`` of the result is ``pi~ ∝ pi_1^(alpha0/alpha) * exp(Q/alpha)``.
    ``base_logits`` may be raw logits or log-probs (``log_softmax`` is idempotent).
    """
    if q_logits.shape != base_logits.shape:
        raise ValueError(f"q_logits and base_logits must have the same shape; got {tuple(q_logits.shape)}, {tuple(base_logits.shape)}")
    alpha = _check_alpha(alpha)
    if float(alpha0) == 0.0:
        return q_logits / alpha
    base_lp = torch.log_softmax(base_logits.to(q_logits.dtype), dim=-1)
    return (q_logits + float(alpha0) * base_lp) / alpha
