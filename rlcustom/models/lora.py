"""peft LoRA layers of a model (read by Q-Adapter's objectives and the DeRa/Q-Adapter decoders)."""
from __future__ import annotations


def lora_layers(model) -> list:
    """The peft ``LoraLayer`` modules of ``model`` (empty if none)."""
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]
