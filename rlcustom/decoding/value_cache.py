"""ValueCache: a value model decoded alongside the policy with its own KV cache (VAS children values).

Han et al. 2024, VAS Section 3.3: the value of each of the top-k children of the
current prefix, for every row, at the cost of one value forward per step.
"""
from __future__ import annotations

import torch

__all__ = ["ValueCache", "model_device"]

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


def model_device(model) -> torch.device:
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
        return model_device(self.model)

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
