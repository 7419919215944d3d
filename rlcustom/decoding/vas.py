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


# --------------------------------------------------------------------------------------
# Decoding with models: StepModels for the ``hf`` engine (white-box and black-box), factory.
# --------------------------------------------------------------------------------------
#
# Child values with the prefix KV cache ("tree" mode, the default). The value model keeps
# the KV cache of the prefix (B rows). For the k children of each row, ONE forward runs B
# rows of k new tokens against that cache with a 4-D additive attention mask: child j
# attends to the (non-pad) prefix columns and to itself only, and every child gets the
# position of the next token (the k children are k new positions of the same row; the
# prefix cache is not copied). The value model has no LM head: the forward is the backbone
# plus a [H] -> 1 head. The children stay in the cache after that forward: when the engine
# then picks one of them for every row (always under greedy decoding, and whenever the
# sampled token is in the top-k), ``advance`` moves that child's K/V entries to the first
# free column and drops the others -- the chosen token costs no forward at all (its K/V
# with the prefix and itself in view are exactly what a one-token forward would compute).
# If some row picked a token outside its children, the children are dropped and the chosen
# tokens are "pending": they run as one extra new token in front of the next children (the
# children then also see it), so every step costs ONE value forward of k or k + 1 tokens.
# This needs a full-attention ``DynamicCache`` (every layer a plain ``DynamicLayer``: Llama,
# Qwen2, SmolLM, Mistral without sliding window, ...) and an attention implementation that
# takes a custom 4-D mask (eager, sdpa; not flash-attention). ``mode="expand"`` is the
# general fallback: a copy of the prefix cache repeated to B*k rows, one forward of B*k
# single tokens (k times the cache memory, a copy per step) and one forward per advance.

__all__ += ["ValueCache", "VASStep", "VASBlackBoxStep", "vas_decoder", "vas_blackbox_decoder"]


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Real token ``j`` of a left-padded row gets position ``j`` (as the ``hf`` engine does)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class ValueCache:
    """A :class:`~rlcustom.models.heads.ValueModel` decoded alongside the policy, with its own KV cache.

    ``start(ids, mask)`` reads the prompt; ``children(ids [B, k]) -> [B, k]`` values
    ``V(s ⊕ x)`` of the k children of the current prefix ``s`` of each row;
    ``advance(tokens [B])`` appends one token per row; ``reorder(rows)`` keeps rows.
    ``mode``: ``"tree"`` (default) or ``"expand"`` (see above). ``length`` is the number of
    columns of the prefix (prompt, padding included, plus the tokens advanced so far); in
    tree mode the KV cache may lag it by one pending token or hold the last children.
    """

    def __init__(self, value_model, mode: str = "tree") -> None:
        if mode not in ("tree", "expand"):
            raise ValueError(f"mode must be 'tree' or 'expand'; got {mode!r}")
        self.model, self.mode = value_model, mode
        self.cache = None
        self._kids: torch.Tensor | None = None  # [B, k] children held in the cache after the prefix (tree)
        self._pending: torch.Tensor | None = None  # [B, 1] chosen tokens not yet in the cache (tree)

    @property
    def device(self) -> torch.device:
        return _model_device(self.model)

    @property
    def length(self) -> int:
        """Columns of the prefix the next children extend (cached + pending tokens)."""
        return int(self.attn.shape[1]) + (0 if self._pending is None else 1)

    def _forward(self, ids, attn, pos, cache):
        m = self.model
        if not m.training:  # decoding is inference; no module walk when already in eval mode
            return m(ids, attn, position_ids=pos, past_key_values=cache, use_cache=True)
        m.eval()
        try:
            return m(ids, attn, position_ids=pos, past_key_values=cache, use_cache=True)
        finally:
            m.train(True)

    @torch.inference_mode()
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        dev = self.device
        self.attn = attention_mask.to(dev).long()
        pos = _positions(self.attn)
        _, self.cache = self._forward(input_ids.to(dev), self.attn, pos, None)
        self.pos = pos[:, -1:]
        self._kids = self._pending = None
        if self.mode == "tree":
            layers = getattr(self.cache, "layers", None)
            if layers is None or any(type(l).__name__ != "DynamicLayer" for l in layers):
                raise ValueError("VAS tree mode needs a full-attention DynamicCache (plain DynamicLayer per layer); "
                                 f"got {type(self.cache).__name__} with "
                                 f"{sorted({type(l).__name__ for l in (layers or [])})}; use mode='expand'")

    def _drop_kids(self) -> None:
        if self._kids is not None:
            self.cache.crop(-self._kids.shape[1])
            self._kids = None

    @torch.inference_mode()
    def children(self, ids: torch.Tensor) -> torch.Tensor:
        if self.cache is None:
            raise RuntimeError("children() called before start()")
        dev = self.device
        ids = ids.to(dev).long()
        B, k = ids.shape
        if self.mode == "expand":
            import copy

            pos = (self.pos + 1).expand(B, k)
            cache = copy.deepcopy(self.cache)
            cache.batch_repeat_interleave(k)
            attn = torch.cat([self.attn.repeat_interleave(k, 0), self.attn.new_ones((B * k, 1))], dim=1)
            vals, _ = self._forward(ids.reshape(B * k, 1), attn, pos.reshape(B * k, 1), cache)
            return vals[:, -1].reshape(B, k).float()
        self._drop_kids()  # children() twice without advance(): forget the first ones
        p = 0 if self._pending is None else 1
        # the new tokens: [pending token,] k children; the tree mask over [cached prefix | new tokens]
        dtype = self.model.dtype
        L = self.attn.shape[1]
        allowed = torch.zeros((B, 1, p + k, L + p + k), dtype=torch.bool, device=dev)
        allowed[..., :L] = self.attn.bool()[:, None, None, :]
        allowed[..., L:].diagonal(dim1=-2, dim2=-1).fill_(True)  # every new token sees itself
        if p:
            allowed[:, :, 1:, L] = True  # the children see the pending token
            ids = torch.cat([self._pending, ids], dim=1)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=dev).masked_fill_(~allowed, torch.finfo(dtype).min)
        pos = torch.cat([self.pos + 1, (self.pos + 1 + p).expand(B, k)], dim=1) if p else (self.pos + 1).expand(B, k)
        vals, self.cache = self._forward(ids, mask, pos, self.cache)
        if p:  # the pending token is in the cache now
            self.attn = torch.cat([self.attn, self.attn.new_ones((B, 1))], dim=1)
            self.pos = self.pos + 1
            self._pending = None
        self._kids = ids[:, p:]
        return vals[:, p:].float()

    @torch.inference_mode()
    def advance(self, tokens: torch.Tensor) -> None:
        if self.cache is None:
            raise RuntimeError("advance() called before start()")
        dev = self.device
        tokens = tokens.to(dev).long().reshape(-1, 1)
        if self.mode == "tree":
            self._advance_tree(tokens)
            return
        self.attn = torch.cat([self.attn, self.attn.new_ones((self.attn.shape[0], 1))], dim=1)
        self.pos = self.pos + 1
        _, self.cache = self._forward(tokens, self.attn, self.pos, self.cache)

    def _advance_tree(self, tokens: torch.Tensor) -> None:
        if self._pending is not None:  # advance() twice without children(): run the older token now
            p, self._pending = self._pending, None
            self.attn = torch.cat([self.attn, self.attn.new_ones((self.attn.shape[0], 1))], dim=1)
            self.pos = self.pos + 1
            _, self.cache = self._forward(p, self.attn, self.pos, self.cache)
        kids, self._kids = self._kids, None
        if kids is not None:
            match = kids == tokens
            if bool(match.any(1).all()):  # every row chose one of its children: keep that child's K/V
                L, k = self.attn.shape[1], kids.shape[1]
                j = match.int().argmax(1)
                if bool(j.any()):  # some row chose a later child: copy its K/V to column L (else already there)
                    rows = torch.arange(kids.shape[0], device=kids.device)
                    for layer in self.cache.layers:
                        layer.keys[:, :, L] = layer.keys[rows, :, L + j]
                        layer.values[:, :, L] = layer.values[rows, :, L + j]
                self.cache.crop(-(k - 1))
                self.attn = torch.cat([self.attn, self.attn.new_ones((self.attn.shape[0], 1))], dim=1)
                self.pos = self.pos + 1
                return
            self.cache.crop(-kids.shape[1])
        self._pending = tokens  # computed with the next children (one forward of k + 1 tokens)

    def reorder(self, rows: torch.Tensor) -> None:
        if self.cache is None:
            raise RuntimeError("reorder() called before start()")
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.attn.device).reshape(-1)
        self.cache.reorder_cache(idx)
        self.attn = self.attn.index_select(0, idx)
        self.pos = self.pos.index_select(0, idx)
        if self._kids is not None:
            self._kids = self._kids.index_select(0, idx)
        if self._pending is not None:
            self._pending = self._pending.index_select(0, idx)


def _check_betas(betas, n: int) -> list:
    if isinstance(betas, (list, tuple)):
        betas = list(betas)
    else:
        betas = [betas]
    if len(betas) != n:
        raise ValueError(f"got {n} value model(s) but {len(betas)} beta(s)")
    for i, b in enumerate(betas):
        if isinstance(b, torch.Tensor):
            if b.dim() > 1:
                raise ValueError(f"beta[{i}] must be a number, a 0-d or a [B] tensor; got shape {tuple(b.shape)}")
            if not bool(torch.isfinite(b).all()):
                raise ValueError(f"beta[{i}] must be finite")
        elif isinstance(b, bool) or not isinstance(b, numbers.Real) or not float(b) == float(b) \
                or abs(float(b)) == float("inf"):
            raise ValueError(f"beta[{i}] must be a finite real number or a tensor; got {b!r}")
    return betas


def _value_list(value_models) -> list:
    vms = list(value_models) if isinstance(value_models, (list, tuple)) else [value_models]
    if not vms:
        raise ValueError("VAS needs at least one value model")
    return vms


class _VASBase:
    """Shared by the white-box and black-box steps: value caches, betas, composed child values."""

    def _setup(self, value_models, betas, k: int, mode: str) -> None:
        self.value_models = _value_list(value_models)
        self.betas = _check_betas(betas, len(self.value_models))
        if int(k) < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        self.k = int(k)
        self.values = [ValueCache(vm, mode=mode) for vm in self.value_models]
        self.last: dict | None = None  # the last step's children, values and scores, for inspection

    def _composed(self, topk_ids: torch.Tensor) -> torch.Tensor:
        """``sum_j beta_j V_j(s ⊕ x)`` for the children ``topk_ids`` [B, k] (on ``topk_ids``' device)."""
        B = topk_ids.shape[0]
        for i, b in enumerate(self.betas):
            if isinstance(b, torch.Tensor) and b.dim() == 1 and b.shape[0] != B:
                raise ValueError(f"per-request beta[{i}] has {b.shape[0]} entries but the batch has {B} rows")
        vals = [vc.children(topk_ids).to(topk_ids.device) for vc in self.values]
        return compose_values(vals, self.betas), vals

    def _values_start(self, input_ids, attention_mask) -> None:
        for vc in self.values:
            vc.start(input_ids, attention_mask)

    def _values_advance(self, tokens) -> None:
        for vc in self.values:
            vc.advance(tokens)

    def _reorder_betas(self, rows) -> None:
        idx = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
        self.betas = [b.index_select(0, idx.to(b.device)) if isinstance(b, torch.Tensor) and b.dim() == 1 else b
                      for b in self.betas]


class VASStep(_VASBase):
    """VAS decoding (Eq. 5) as a :class:`~rlcustom.engines.base.StepModel` for the ``hf`` engine.

    Each step: ``log pi_0`` of the base model (KV-cached), its top-``k`` tokens, the value
    of each child from each value model (one batched forward per value model against its
    prefix cache, see :class:`ValueCache`), ``V = sum_j beta_j V_j`` (:func:`compose_values`)
    and ``vas_scores(log pi_0, topk_ids, V, 1)`` returned as logits: the engine samples
    from their softmax (temperature / top-k / top-p of ``SamplingParams`` apply after).
    ``advance(token)`` extends the base and every value cache by the chosen token.

    Args:
        base_model: the frozen policy ``pi_0`` (a causal LM).
        value_models: one :class:`~rlcustom.models.heads.ValueModel` or a list (composition).
        betas: one beta per value model; each a number or a ``[B]`` tensor (per request;
            rows are the engine's rows, i.e. ``n`` samples per prompt are separate rows).
        k: children evaluated per step (paper: 20). mode: ``"tree"`` | ``"expand"``.

    The log-probs the engine records for the sampled tokens are those of the VAS
    distribution (as for DeRa), not of ``pi_0``.
    """

    def __init__(self, base_model, value_models, betas=1.0, k: int = 20, mode: str = "tree") -> None:
        from rlcustom.decoding.multi import _CachedLM

        self.base = _CachedLM(base_model)
        self._setup(value_models, betas, k, mode)

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        base_lp = torch.log_softmax(logits.float(), dim=-1)
        k = min(self.k, base_lp.shape[-1])
        ids, _ = topk_children(base_lp, k)
        combined, vals = self._composed(ids)
        scores = vas_scores(base_lp, ids, combined, 1.0)
        self.last = {"topk_ids": ids, "values": vals, "combined": combined, "base_logprobs": base_lp}
        return scores

    @torch.inference_mode()
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.base.start(input_ids, attention_mask)
        self._values_start(input_ids, attention_mask)
        return self._scores(logits)

    @torch.inference_mode()
    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.base.advance(tokens)
        self._values_advance(tokens)
        return self._scores(logits)

    def reorder(self, rows: torch.Tensor) -> None:
        self.base.reorder(rows)
        for vc in self.values:
            vc.reorder(rows)
        self._reorder_betas(rows)


class VASBlackBoxStep(_VASBase):
    """VAS when ``pi_0`` is only reachable through its top-k log-probs (Section 4.4), as a StepModel.

    ``base_fn(input_ids [B, L], attention_mask [B, L]) -> (topk_ids [B, k], topk_logprobs [B, k])``
    is called once per step with the whole left-padded sequence so far (prompt + generated
    tokens; an API has no KV cache of ours): e.g. a vLLM engine with ``logprobs=k`` or an
    OpenAI-compatible endpoint (decode the ids to text there). The value models are
    white-box and KV-cached as in :class:`VASStep`. Each step returns ``[B, V]`` logits that
    are ``-inf`` outside the returned top-k and ``vas_blackbox_scores`` (renormalised over
    the k) on them. ``vocab_size`` defaults to the first value model's ``config.vocab_size``.
    """

    def __init__(self, base_fn, value_models, betas=1.0, k: int = 20, vocab_size: int | None = None,
                 mode: str = "tree") -> None:
        if not callable(base_fn):
            raise TypeError("base_fn must be a callable (input_ids, attention_mask) -> (topk_ids, topk_logprobs)")
        self.base_fn = base_fn
        self._setup(value_models, betas, k, mode)
        self.vocab_size = int(vocab_size or self.value_models[0].config.vocab_size)

    def _scores(self) -> torch.Tensor:
        ids, lps = self.base_fn(self.ids, self.attn)
        ids = torch.as_tensor(ids, dtype=torch.long)
        lps = torch.as_tensor(lps, dtype=torch.float32)
        if ids.dim() != 2 or ids.shape[0] != self.ids.shape[0]:
            raise ValueError(f"base_fn must return [B={self.ids.shape[0]}, k] ids; got {tuple(ids.shape)}")
        ids, lps = ids[:, : self.k], lps[:, : self.k]
        combined, vals = self._composed(ids)
        ids, scores = vas_blackbox_scores(ids, lps, combined, 1.0)
        out = torch.full((ids.shape[0], self.vocab_size), float("-inf"), dtype=torch.float32, device=scores.device)
        self.last = {"topk_ids": ids, "topk_logprobs": lps, "values": vals, "combined": combined}
        return out.scatter(-1, ids.to(out.device), scores.float())

    @torch.inference_mode()
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.ids, self.attn = input_ids.long(), attention_mask.long()
        self._values_start(input_ids, attention_mask)
        return self._scores()

    @torch.inference_mode()
    def advance(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.reshape(-1).long().to(self.ids.device)
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        self.attn = torch.cat([self.attn, self.attn.new_ones((self.attn.shape[0], 1))], dim=1)
        self._values_advance(tokens)
        return self._scores()

    def reorder(self, rows: torch.Tensor) -> None:
        idx = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
        self.ids, self.attn = self.ids.index_select(0, idx), self.attn.index_select(0, idx)
        for vc in self.values:
            vc.reorder(rows)
        self._reorder_betas(rows)


def _load_values(value_models, dtype: str | None) -> list:
    """Value models from paths (loaded in ``dtype``) or objects; ``dtype="int8"``: float32 weights with the
    backbone's Linear layers dynamically quantised (CPU; ~3x faster 20-child forwards, see models/quantize.py)."""
    from rlcustom.models.quantize import is_quantized, quantize_backbone_int8

    out = []
    for v in _value_list(value_models):
        if isinstance(v, (str, bytes)) or hasattr(v, "__fspath__"):
            from rlcustom.models.heads import ValueModel

            v = ValueModel.load(v, dtype="float32" if dtype == "int8" else dtype)
        if dtype == "int8" and not is_quantized(v):
            v = quantize_backbone_int8(v)
        out.append(v.eval())
    return out


def _to_device(vm, dev: torch.device):
    from rlcustom.models.quantize import is_quantized

    if is_quantized(vm) and dev.type != "cpu":
        raise ValueError(f"an int8 value model runs on CPU only, but pi_0 is on {dev} (use dtype bfloat16 on a GPU)")
    return vm.to(dev)


def vas_decoder(value_models, betas=1.0, k: int = 20, *, mode: str = "tree", dtype: str | None = None):
    """Factory for the ``hf`` engine: ``HFEngine(pi0, tok, decoder=vas_decoder([vm], [2.0]))``.

    Kwargs (also the ``decoder=vas`` config/CLI signature):
        value_models: one value model or a list; each a loaded
            :class:`~rlcustom.models.heads.ValueModel` or a directory written by
            ``ValueModel.save`` (e.g. ``OUTPUT_DIR/value`` of the ``vas`` trainer), loaded once here
            in ``dtype`` (None: as saved; ``"int8"``: dynamic int8 backbone, CPU only) and moved to the
            engine model's device on first use.
        betas: one per value model (a bare number for one model); numbers or ``[B]`` tensors.
        k: top-k children evaluated per step (default 20, as the paper).
        mode: ``"tree"`` (one forward of B rows x k tokens with a tree mask) or ``"expand"``.

    Returns ``factory(model) -> VASStep``.
    """
    vms = _load_values(value_models, dtype)
    betas = _check_betas(betas, len(vms))
    if int(k) < 1:
        raise ValueError(f"k must be >= 1; got {k}")

    def factory(model) -> VASStep:
        dev = _model_device(model)
        for i, vm in enumerate(vms):
            if _model_device(vm) != dev:
                vms[i] = _to_device(vm, dev)
        return VASStep(model, vms, betas, k=k, mode=mode)

    return factory


def vas_blackbox_decoder(base_fn, value_models, betas=1.0, k: int = 20, *, vocab_size: int | None = None,
                         mode: str = "tree", dtype: str | None = None):
    """Factory for the ``hf`` engine running :class:`VASBlackBoxStep` (the engine's own model is
    ignored: ``pi_0`` is ``base_fn``). Returns ``factory(model) -> VASBlackBoxStep``."""
    vms = _load_values(value_models, dtype)
    betas = _check_betas(betas, len(vms))

    def factory(model=None) -> VASBlackBoxStep:
        return VASBlackBoxStep(base_fn, vms, betas, k=k, vocab_size=vocab_size, mode=mode)

    return factory


def _register_decoder() -> None:
    from rlcustom.registry import DECODERS

    if "vas" not in DECODERS:
        DECODERS.register("vas")(vas_decoder)


_register_decoder()
