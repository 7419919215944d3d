"""Decoding-time realignment (DeRa): blend reference and aligned models at decoding time.

Liu, Guo, Bianco, Calandriello, Berthet, Llinares, Hoffmann, Dixon, Valko, Blondel,
"Decoding-time Realignment of Language Models", ICML 2024.

A model aligned with KL strength ``beta`` can be turned into an approximation of the
model aligned with strength ``beta / lam`` without retraining. Per token (Eq. 6) this
is the geometric mixture ``pi_sft^(1 - lam) * pi_aligned^lam`` (renormalised), which in
logit space is a linear combination (Proposition 1, Eq. 9; Algorithm 1):

    p_t = softmax( lam * h_aligned + (1 - lam) * h_sft ).

``lam = 0`` gives the SFT model, ``lam = 1`` the aligned one; ``lam > 1`` extrapolates
(weaker regularisation, the paper tests 2, 5, 10) and ``lam < 1`` strengthens it. With
several aligned models (one per reward, Appendix B: ``pi_sft^(1 - sum lam_i) *
prod_i pi_i^lam_i``) the logits combine as

    (1 - sum_i lam_i) * h_sft + sum_i lam_i * h_i.

:func:`interpolate_state_dicts` is the cheaper weight-combining variant of Appendix D.5
("linearly combine parameters of the aligned model and the reference model, as in
Rame et al. (2023)"), which the paper finds works but at a performance penalty.

Pure math on tensors and state dicts; decoding with models (the ``dera``/``dera_lora``
step models and factories, weight combining of loaded models) is :mod:`rlcustom.decoding.dera`.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Union

import torch

__all__ = ["dera_logits", "interpolate_state_dicts", "lam_scalar"]

LamLike = Union[float, torch.Tensor]


def lam_scalar(lam: Any, what: str) -> float:
    if isinstance(lam, torch.Tensor):
        if lam.numel() != 1:
            raise ValueError(f"{what} must be a single number here; got a tensor of shape {tuple(lam.shape)}")
        lam = lam.item()
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real):
        raise ValueError(f"{what} must be a real number; got {type(lam).__name__}")
    lam = float(lam)
    if not math.isfinite(lam):
        raise ValueError(f"{what} must be finite; got {lam}")
    return lam


def _lam_coef(lam: Any, what: str, ref: torch.Tensor, dtype: torch.dtype) -> float | torch.Tensor:
    """A number (or 1-element tensor) becomes a float; a ``[B]`` tensor becomes
    ``[B, 1, ..., 1]`` (one lambda per row of the logits)."""
    if isinstance(lam, torch.Tensor) and lam.numel() != 1:
        if lam.dim() != 1 or ref.dim() < 2 or lam.shape[0] != ref.shape[0]:
            raise ValueError(
                f"{what} must be a number or a [B] tensor with B = logits.shape[0]; "
                f"got shape {tuple(lam.shape)} for logits of shape {tuple(ref.shape)}"
            )
        if not bool(torch.isfinite(lam).all()):
            raise ValueError(f"{what} must be finite; got {lam.tolist()}")
        return lam.to(device=ref.device, dtype=dtype).reshape((-1,) + (1,) * (ref.dim() - 1))
    return lam_scalar(lam, what)


def _is_zero(c: float | torch.Tensor) -> bool:
    return isinstance(c, float) and c == 0.0


def _as_model_list(models: Any, lam: Any, name: str) -> tuple[list, list]:
    """Normalise (one model, one lam) or (sequence of models, sequence of lams)."""
    if isinstance(models, (torch.Tensor, Mapping)):
        if isinstance(lam, (list, tuple)):
            raise ValueError(f"a single {name} takes a single lam; got a sequence of {len(lam)}")
        return [models], [lam]
    if not isinstance(models, (list, tuple)):
        raise ValueError(f"{name} must be one tensor/state dict or a list/tuple of them; got {type(models).__name__}")
    if not isinstance(lam, (list, tuple)):
        raise ValueError(f"with {len(models)} aligned models, lam must be a list/tuple of {len(models)} numbers")
    if len(models) == 0:
        raise ValueError(f"{name} must not be empty")
    if len(models) != len(lam):
        raise ValueError(f"got {len(models)} aligned models but {len(lam)} lam values")
    return list(models), list(lam)


def dera_logits(
    sft_logits: torch.Tensor,
    aligned_logits: torch.Tensor | Sequence[torch.Tensor],
    lam: LamLike | Sequence[LamLike],
) -> torch.Tensor:
    """DeRa mixed logits (Eq. 9; Appendix B for several aligned models).

    Args:
        sft_logits: reference logits ``h_sft``, any shape ``[..., V]`` (e.g. ``[B, V]``).
        aligned_logits: one tensor ``h_aligned`` of the same shape, or a list/tuple of them.
        lam: for one aligned tensor, a real number (any sign, > 1 allowed), a 1-element
            tensor, or a ``[B]`` tensor with one lambda per row (per-request realignment);
            for a list of aligned tensors, a list/tuple of the same length of such values.

    Returns:
        ``(1 - sum lam_i) * h_sft + sum lam_i * h_i``, in at least float32. Terms whose
        (scalar) coefficient is exactly 0 are skipped, so ``lam = 0`` returns
        ``h_sft`` and ``lam = 1`` returns ``h_aligned`` exactly. A ``-inf`` logit
        (disallowed token) in any model that takes part stays ``-inf`` in the output
        (without this rule extrapolation ``lam > 1`` would turn ``(1 - lam) * -inf``
        into ``+inf``).

    Raises:
        ValueError: mismatched counts or shapes, empty list, non-finite or non-real lam.
    """
    if not isinstance(sft_logits, torch.Tensor):
        raise ValueError(f"sft_logits must be a tensor; got {type(sft_logits).__name__}")
    models, lams = _as_model_list(aligned_logits, lam, "aligned_logits")
    dtype = sft_logits.dtype
    for i, h in enumerate(models):
        if not isinstance(h, torch.Tensor):
            raise ValueError(f"aligned_logits[{i}] must be a tensor; got {type(h).__name__}")
        if h.shape != sft_logits.shape:
            raise ValueError(f"aligned_logits[{i}] has shape {tuple(h.shape)}, sft_logits {tuple(sft_logits.shape)}")
        dtype = torch.promote_types(dtype, h.dtype)
    dtype = torch.promote_types(dtype, torch.float32)
    coefs = [_lam_coef(l, f"lam[{i}]" if len(lams) > 1 else "lam", sft_logits, dtype) for i, l in enumerate(lams)]
    if all(isinstance(c, float) for c in coefs):
        c_sft: float | torch.Tensor = 1.0 - math.fsum(coefs)  # type: ignore[arg-type]
    else:
        c_sft = 1.0 - sum(coefs)  # type: ignore[assignment]

    out: torch.Tensor | None = None
    neg_inf: torch.Tensor | None = None
    for c, h in [(c_sft, sft_logits)] + list(zip(coefs, models)):
        if _is_zero(c):
            continue
        term = c * h.to(dtype)
        out = term if out is None else out + term
        ni = torch.isneginf(h)
        neg_inf = ni if neg_inf is None else neg_inf | ni
    if out is None:  # unreachable: the coefficients sum to 1
        raise ValueError("all DeRa coefficients are zero")
    assert neg_inf is not None
    return torch.where(neg_inf, torch.full_like(out, float("-inf")), out)


def interpolate_state_dicts(
    sft_sd: Mapping[str, Any],
    aligned_sd: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    lam: float | Sequence[float],
) -> dict[str, Any]:
    """Weight-combining DeRa (Appendix D.5): ``theta = lam * theta_aligned + (1 - lam) * theta_sft``
    (for several aligned state dicts, ``(1 - sum lam_i) * theta_sft + sum lam_i * theta_i``).

    Floating-point tensors are combined (in float32 when stored in a lower precision,
    then cast back to the SFT tensor's dtype); zero coefficients are skipped, so
    ``lam = 0`` / ``1`` reproduce the SFT / aligned weights exactly. Non-float tensors
    (integer buffers, step counters) and non-tensor entries are copied from ``sft_sd``.

    Raises:
        ValueError: key sets differ (the missing/extra keys are listed), a float tensor's
            shape differs, mismatched counts, non-finite lam.
    """
    models, lams = _as_model_list(aligned_sd, lam, "aligned_sd")
    coefs = [lam_scalar(l, f"lam[{i}]" if len(lams) > 1 else "lam") for i, l in enumerate(lams)]
    c_sft = 1.0 - math.fsum(coefs)
    keys = set(sft_sd.keys())
    for i, sd in enumerate(models):
        if not isinstance(sd, Mapping):
            raise ValueError(f"aligned_sd[{i}] must be a mapping; got {type(sd).__name__}")
        other = set(sd.keys())
        if other != keys:
            missing = sorted(keys - other)[:10]
            extra = sorted(other - keys)[:10]
            raise ValueError(f"state dict keys differ (aligned #{i}): missing {missing}, unexpected {extra}")
    out: dict[str, Any] = {}
    for key, base in sft_sd.items():
        if not isinstance(base, torch.Tensor) or not base.is_floating_point():
            out[key] = base.clone() if isinstance(base, torch.Tensor) else base
            continue
        work = torch.promote_types(base.dtype, torch.float32)
        acc: torch.Tensor | None = None
        for j, (c, sd) in enumerate([(c_sft, sft_sd)] + list(zip(coefs, models))):
            t = sd[key]
            if not isinstance(t, torch.Tensor) or t.shape != base.shape:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{key!r}: aligned #{j - 1} has {shape}, sft has {tuple(base.shape)}")
            if c == 0.0:
                continue
            term = c * t.detach().to(device=base.device, dtype=work)
            acc = term if acc is None else acc + term
        assert acc is not None  # the coefficients sum to 1, so one is nonzero
        out[key] = acc.to(base.dtype)
    return out
