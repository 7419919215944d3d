"""Plain-data state for checkpoints: what ``torch.load(..., weights_only=True)`` accepts, and RNG states.

DeepSpeed's ZeRO optimizer state dicts hold objects (a ``LossScaler``, fragment
addresses in ``param_slice_mappings``); saving them as they are would need
``weights_only=False`` on load (arbitrary code). :func:`plain_state` keeps the
plain entries; the rest comes from the live optimizer on load.
"""
from __future__ import annotations

import enum
import random
from typing import Any

import torch

_SAFE_SCALARS = (bool, int, float, str, type(None))


class _Drop:
    def __repr__(self) -> str:
        return "<dropped>"


DROP = _Drop()


def to_plain(obj: Any) -> Any:
    """``obj`` as data that ``torch.load(weights_only=True)`` accepts, or :data:`DROP`.

    Tensors (moved to CPU), numbers, strings, lists, tuples and dicts with str/int
    keys pass; enums become their value; anything holding another object is ``DROP``.
    """
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, enum.Enum):
        return to_plain(obj.value)
    if isinstance(obj, _SAFE_SCALARS):
        return obj
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            pv = to_plain(v)
            if not isinstance(k, (str, int)) or pv is DROP:
                return DROP
            out[k] = pv
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v) for v in obj]
        if any(v is DROP for v in items):
            return DROP
        return items if isinstance(obj, list) else tuple(items)
    return DROP


def plain_state(sd: dict) -> dict:
    """The entries of a state dict that are plain data (see :func:`to_plain`); the rest are left out."""
    out = {}
    for k, v in sd.items():
        pv = to_plain(v)
        if pv is not DROP:
            out[k] = pv
    return out


def rng_state() -> dict:
    """torch (CPU and CUDA), Python and NumPy RNG states as plain data."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(),
                             "python": (int(version), tuple(int(x) for x in internal), gauss)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    import numpy as np  # a dependency of torch, transformers and DeepSpeed: always present

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state["numpy"] = {"kind": str(kind), "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["gauss"]))
