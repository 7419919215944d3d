"""Loading the aligned side of a DeRa sweep: an aligned model directory, a peft adapter, or a LoRA
learner checkpoint (``rlcustom eval dera --aligned/--adapter``)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from rlcustom.errors import RLCustomError

__all__ = ["load_aligned"]


def _checkpoint_weights(path: Path) -> Path | None:
    """The LoRA ``model.safetensors`` of a learner checkpoint: ``OUTPUT_DIR``, ``OUTPUT_DIR/checkpoints``,
    ``.../step_N`` or ``.../step_N/learner`` (``latest`` pointers are followed)."""
    cands = [path]
    for root in (path, path / "checkpoints"):
        ptr = root / "latest"
        if ptr.is_file():
            cands.append(root / ptr.read_text().strip())
    for c in list(cands):
        cands.append(c / "learner")
    for c in cands:
        if (c / "learner.json").is_file() and (c / "model.safetensors").is_file():
            return c
    return None


def load_aligned(sft_model, *, aligned: str | None, adapter: str | None, lora_cfg=None, dtype: str = "float32"):
    """``("two_model", aligned_model)`` or ``("lora", peft_model)`` (the peft model wraps a copy of ``sft_model``).

    ``adapter`` is a peft adapter directory (``adapter_config.json``) or a learner checkpoint
    of a LoRA run (``OUTPUT_DIR``, ``OUTPUT_DIR/checkpoints/latest``, ``.../step_N``), whose
    adapter weights are read with the config's ``model.lora`` settings (``lora_cfg``).
    """
    if aligned and adapter:
        raise RLCustomError("eval dera: give --aligned PATH or --adapter DIR, not both")
    if not aligned and not adapter:
        raise RLCustomError("eval dera: needs --aligned PATH (an aligned model directory, e.g. OUTPUT_DIR/model) "
                            "or --adapter DIR (a LoRA adapter or LoRA checkpoint over model.path)")
    from rlcustom.models.loading import load_causal_lm

    if aligned:
        from rlcustom.errors import ModelLoadError

        try:
            return "two_model", load_causal_lm(aligned, dtype=dtype).eval()
        except ModelLoadError as e:
            raise RLCustomError(f"--aligned: {e}") from None

    p = Path(adapter).expanduser()
    if not p.exists():
        raise RLCustomError(f"--adapter {adapter}: no such directory")
    base = copy.deepcopy(sft_model)
    if (p / "adapter_config.json").is_file():
        from peft import PeftModel

        return "lora", PeftModel.from_pretrained(base, str(p), is_trainable=False).eval()
    ck = _checkpoint_weights(p)
    if ck is None:
        raise RLCustomError(f"--adapter {adapter}: neither a peft adapter directory (adapter_config.json) "
                            "nor a learner checkpoint (learner.json + model.safetensors)")
    meta = json.loads((ck / "learner.json").read_text())
    if not meta.get("lora"):
        raise RLCustomError(f"--adapter {adapter}: checkpoint {ck} is not a LoRA run (train with model.lora, "
                            "or pass its exported model with --aligned OUTPUT_DIR/model)")
    if lora_cfg is None:
        raise RLCustomError(f"--adapter {adapter}: a LoRA checkpoint needs the run's model.lora settings "
                            "in the config (r, alpha, target_modules)")
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    pcfg = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=0.0,
                      target_modules=list(lora_cfg.target_modules), bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(base, pcfg)
    sd = load_file(str(ck / "model.safetensors"))
    res = set_peft_model_state_dict(pm, sd)
    unexpected = list(getattr(res, "unexpected_keys", []) or [])
    if unexpected or not any(".lora_" in k for k in sd):
        raise RLCustomError(f"--adapter {adapter}: {ck / 'model.safetensors'} does not match model.lora "
                            f"(unexpected keys, e.g. {unexpected[:2]})")
    return "lora", pm.eval()
