"""A model directory read without loading its weights: what files it has, what their safetensors headers say.

Everything here reads ``config.json`` and the safetensors *headers* only (an 8-byte length, then JSON), so it
costs milliseconds even for a large model. Used by the preflight (a model folder whose ``config.json`` does not
match its weights would otherwise load with every weight freshly random) and by checkpoint identity (a content
fingerprint of the model a checkpoint was trained from).

safetensors layout: ``u64 little-endian N`` + ``N`` bytes of JSON ``{name: {dtype, shape, data_offsets}}`` +
the data; a tensor's bytes are ``data[begin:end]`` of ``data_offsets``, so the file must hold at least
``8 + N + max(end)`` bytes (a shorter file is truncated).
"""
from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path
from typing import Any

from rlcustom.errors import ModelLoadError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "tokenizer_config.json")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a safetensors file; :class:`ModelLoadError` naming the file if it is not one or is
    truncated (its tensors' byte ranges run past the end of the file)."""
    p = Path(path)
    size = p.stat().st_size
    with p.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"{p}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise ModelLoadError(f"{p}: not a safetensors file or truncated (header of {n} bytes, file of {size})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelLoadError(f"{p}: corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{p}: corrupt safetensors header")
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise ModelLoadError(f"{p}: truncated ({size} bytes, its header describes {8 + n + end}); "
                             "copy or save it again")
    return header


def weight_files(d: Path) -> list[Path]:
    """The safetensors files of a model directory (the index's shards when there is one)."""
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError):
            raise ModelLoadError(f"{index}: corrupt index (no weight_map)") from None
        missing = [s for s in shards if not (d / s).is_file()]
        if missing:
            raise ModelLoadError(f"{d}: shard {missing[0]} named in model.safetensors.index.json is missing")
        return [d / s for s in shards]
    return sorted(d.glob("*.safetensors"))


def tensor_shapes(d: Path) -> dict[str, list[int]]:
    """name -> shape over all weight files of ``d``."""
    out: dict[str, list[int]] = {}
    for f in weight_files(d):
        out.update({k: list(v["shape"]) for k, v in read_header(f).items() if k != "__metadata__"})
    return out


def check_model_dir(d: str | Path, *, what: str = "model.path", need_tokenizer: bool = True,
                    need_weights: bool = True) -> dict[str, Any]:
    """Completeness and config-vs-weights agreement of an HF model directory; returns ``config.json``.

    Raises :class:`ModelLoadError` with one line naming the directory and the disagreement."""
    d = Path(d)
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise ModelLoadError(f"{what}: {d} is not a model directory (no config.json)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{what}: {cfg_path}: invalid JSON ({e.msg} at line {e.lineno})"
                             if isinstance(e, json.JSONDecodeError) else f"{what}: {cfg_path}: not text") from None
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"{what}: {cfg_path}: not a JSON object")
    if need_tokenizer and not any((d / t).is_file() for t in TOKENIZER_FILES):
        raise ModelLoadError(f"{what}: {d} has no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])}); "
                             "save the tokenizer into the model directory (tokenizer.save_pretrained)")
    if not need_weights:
        return cfg
    files = weight_files(d)
    if not files:
        other = [p.name for p in d.glob("*.bin")] + [p.name for p in d.glob("*.pt")]
        hint = (f" ({other[0]} is a pickle format, which is not loaded for safety: convert it to safetensors)"
                if other else "")
        raise ModelLoadError(f"{what}: {d} has no weights (*.safetensors){hint}")
    shapes: dict[str, list[int]] = {}
    for f in files:
        shapes.update({k: list(v["shape"]) for k, v in read_header(f).items() if k != "__metadata__"})
    check_architecture(cfg, shapes, where=f"{what}: {d}")
    return cfg


def check_architecture(cfg: dict, shapes: dict[str, list[int]], *, where: str) -> None:
    """config.json's vocab_size / hidden_size / num_hidden_layers against the weights' shapes."""
    embed = next((s for k, s in shapes.items() if k.endswith("embed_tokens.weight") or k.endswith("wte.weight")), None)
    head = shapes.get("lm_head.weight")
    vocab, hidden, n_layers = cfg.get("vocab_size"), cfg.get("hidden_size"), cfg.get("num_hidden_layers")
    for name, shape in (("embed_tokens", embed), ("lm_head", head)):
        if shape is None or len(shape) != 2:
            continue
        if isinstance(vocab, int) and shape[0] != vocab:
            raise ModelLoadError(f"{where}: config.json says vocab_size={vocab} but the weights' {name} has "
                                 f"{shape[0]} rows (config and weights are from different models)")
        if isinstance(hidden, int) and shape[1] != hidden:
            raise ModelLoadError(f"{where}: config.json says hidden_size={hidden} but the weights' {name} is "
                                 f"{shape[1]} wide (config and weights are from different models)")
    layers = {int(m.group(1)) for k in shapes if (m := _LAYER.search(k))}
    if isinstance(n_layers, int) and layers and max(layers) + 1 != n_layers:
        raise ModelLoadError(f"{where}: config.json says num_hidden_layers={n_layers} but the weights have "
                             f"{max(layers) + 1} layers (config and weights are from different models)")


def fingerprint(d: str | Path) -> str | None:
    """sha256 over config.json and every weight file's name, size, header and 16 evenly spaced 4 KiB blocks of
    its data: two models of one architecture differ in it, yet only ~64 KiB per file are read (None when ``d``
    is not a local model directory)."""
    d = Path(d)
    if not (d / "config.json").is_file():
        return None
    h = hashlib.sha256((d / "config.json").read_bytes())
    for f in weight_files(d):
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            h.update(fh.read(min(n, _MAX_HEADER)))
            data = f.stat().st_size - 8 - n
            for i in range(16):
                fh.seek(8 + n + (max(data - 4096, 0) * i) // 15)
                h.update(fh.read(4096))
    return h.hexdigest()[:16]


def lora_rank(shapes: dict[str, list[int]]) -> int | None:
    """The LoRA rank of saved adapter tensors (``lora_A`` is r x in_features), None if there are none."""
    ranks = {s[0] for k, s in shapes.items() if ".lora_A" in k and len(s) == 2}
    return min(ranks) if ranks else None


def module_names(shapes: dict[str, list[int]]) -> set[str]:
    """Last names of the modules that own a ``.weight`` (``q_proj``, ``o_proj``, ``embed_tokens`` ...)."""
    return {k.rsplit(".", 2)[-2] for k in shapes if k.endswith(".weight") and k.count(".") >= 1}
