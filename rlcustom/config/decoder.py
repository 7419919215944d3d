"""The ``decoder:`` section (guided decoding for ``rlcustom generate``) and its cross-key checks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlcustom.config.validation import positive

# which DecoderConfig keys each guided decoder takes (besides ``name``)
DECODER_KEYS: dict[str, tuple[str, ...]] = {
    "vas": ("value", "beta", "topk", "mode", "dtype"),
    "dera": ("aligned", "lam", "dtype"),
    "dera_lora": ("adapter", "lam", "mode"),
    "qadapter": ("adapter", "alpha", "alpha0", "mode"),
}
_DECODER_MODES = {"vas": ("tree", "expand"), "dera_lora": ("auto", "slice", "peft"), "qadapter": ("auto", "slice", "peft")}


@dataclass(frozen=True)
class DecoderConfig:
    """Guided decoding for ``rlcustom generate`` (``hf`` engine): VAS, DeRa, Q-Adapter.

    A bare number or path is accepted where a list is (``decoder.beta=2`` is ``[2.0]``).
    Per-key checks run when the config loads; :meth:`check` (keys that go together) and the
    checks that need the model (``topk`` <= vocabulary, directories exist, engine) run in
    :func:`rlcustom.decoding.registry_cli.check_decoder` before anything is loaded.
    """

    name: Literal["vas", "dera", "dera_lora", "qadapter"] | None = None  # None: plain sampling from model.path
    value: str | tuple[str, ...] = ()  # vas: ValueModel director(y/ies); several compose (VAS Sec. 4.2)
    beta: float | tuple[float, ...] = ()  # vas: one weight per value model (empty: 1.0 each)
    topk: int = field(default=20, metadata=positive)  # vas: children of pi_0's top-k evaluated per step
    mode: Literal["tree", "expand", "auto", "slice", "peft"] | None = None  # vas: tree|expand; LoRA decoders: auto|slice|peft
    dtype: Literal["float32", "bfloat16", "float16", "int8"] | None = None  # vas value / dera aligned model dtype; int8: vas on CPU
    aligned: str | tuple[str, ...] = ()  # dera: aligned model path(s)
    lam: float | tuple[float, ...] = ()  # dera/dera_lora: lambda per aligned model or adapter (empty: 1.0)
    adapter: str | None = None  # dera_lora/qadapter: LoRA adapter directory over model.path
    alpha: float | None = None  # qadapter: alpha (default 1.0)
    alpha0: float | None = field(default=None, metadata=positive)  # qadapter: alpha0 (default 0.01)

    def __post_init__(self) -> None:
        for k in ("value", "beta", "aligned", "lam"):  # a bare item is a list of one
            v = getattr(self, k)
            object.__setattr__(self, k, tuple(v) if isinstance(v, (list, tuple)) else (v,))

    def check(self) -> None:
        """Cross-key checks (ValueError naming the key). Not in ``__post_init__``: overrides are validated
        one at a time, and ``decoder.name=vas decoder.value=DIR`` must not fail after its first half."""
        if self.name is None:
            set_ = [k for k in ("value", "beta", "aligned", "lam", "adapter", "alpha", "alpha0", "mode", "dtype")
                    if getattr(self, k) not in ((), None)]
            if set_:
                raise ValueError(f"decoder.{set_[0]} is set but decoder.name is not (vas, dera, dera_lora or qadapter)")
            return
        allowed = DECODER_KEYS[self.name]
        for k in ("value", "beta", "aligned", "lam", "adapter", "alpha", "alpha0", "mode", "dtype"):
            if k not in allowed and getattr(self, k) not in ((), None):
                raise ValueError(f"decoder.{k} is not used by decoder.name={self.name} "
                                 f"(it takes {', '.join('decoder.' + a for a in allowed)})")
        if self.mode is not None and self.mode not in _DECODER_MODES.get(self.name, ()):
            raise ValueError(f"decoder.mode={self.mode} is not a mode of {self.name} "
                             f"(one of {', '.join(_DECODER_MODES.get(self.name, ()))})")
        # decoder -> (models key, what it is, weights key, one weight per ...)
        paired = {"vas": ("value", "a ValueModel directory", "beta", "value model"),
                  "dera": ("aligned", "the aligned model", "lam", "aligned model")}
        if self.name in paired:
            models_key, what, weights_key, per = paired[self.name]
            models, weights = getattr(self, models_key), getattr(self, weights_key)
            if not models:
                raise ValueError(f"decoder.{models_key} is required for decoder.name={self.name} ({what})")
            if weights and len(weights) != len(models):
                raise ValueError(f"decoder.{weights_key} has {len(weights)} entries but decoder.{models_key} has "
                                 f"{len(models)} (one {'lambda' if weights_key == 'lam' else weights_key} per {per})")
        if self.dtype == "int8" and self.name != "vas":
            raise ValueError(f"decoder.dtype=int8 is for vas value models (dynamic int8 on CPU), not {self.name}")
        if self.name in ("dera_lora", "qadapter") and not self.adapter:
            raise ValueError(f"decoder.adapter is required for decoder.name={self.name} (a LoRA adapter directory)")

    def options(self) -> dict:
        """The keyword options of :func:`rlcustom.decoding.registry_cli.build_decoder` (unset ones left out)."""
        out = {k: getattr(self, k) for k in DECODER_KEYS.get(self.name or "", ()) if getattr(self, k) not in ((), None)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
