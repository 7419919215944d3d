"""A checkpoint that knows what it is, and a resume that cannot load the wrong state.

Each checkpoint's ``trainer_state.json`` carries ``identity``: a flat mapping of dotted keys -- the trainer,
the model (path and a content fingerprint, :func:`rlcustom.models.files.fingerprint`), the adapter (LoRA
r/alpha/targets), dtype, the optimizer settings and the data/seed that define the run. Resume compares
them with the config:

* a difference is refused with one line naming the first differing key, unless ``resume_force: true``
  (``--resume-force``) accepts it; an accepted ``optim.*`` change is applied by the learner on load;
* what cannot be loaded at all is refused even with ``resume_force``: the saved adapter rank or its presence
  against ``model.lora``, the learner's world size / ZeRO stage (its optimizer state is partitioned), full
  weights whose shapes disagree with the model's ``config.json``.

Every file a resume reads is checked here first (:func:`check_resume`), before Ray starts: ``trainer_state.json``
parses, each stateful role's folder and files are present, optimizer files are whole zip archives, weight
headers are not truncated. Checkpoints written before identity existed are compared through their saved config.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlcustom.errors import CheckpointError
from rlcustom.trainers.checkpoint import CheckpointManager, read_state

# keys compared on resume (the checkpoint's value vs the config's); changed ones need resume_force
COMPARED = ("trainer", "model.path", "model.fingerprint", "model.dtype", "model.lora", "model.lora.r",
            "model.lora.alpha", "model.lora.target_modules", "optim.lr", "optim.betas", "optim.eps",
            "optim.weight_decay", "optim.schedule", "optim.warmup_steps", "optim.total_steps", "data.prompts", "seed")


class ResumeMismatch(CheckpointError):
    """The checkpoint resume would load is not from this config's run (names the key)."""


def local_model_dir(path: str) -> Path | None:
    """The directory a model name refers to, without preparing or downloading anything (None if unknown)."""
    from rlcustom.models.embedded import EMBEDDED, cache_root

    if path in EMBEDDED:
        d = cache_root() / path
        return d if (d / ".complete").is_file() else None
    d = Path(path).expanduser()
    return d if (d / "config.json").is_file() else None


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, (list, tuple)) else v


def identity(cfg, *, fingerprint: bool = True) -> dict[str, Any]:
    """The dotted keys of :data:`COMPARED` for ``cfg`` (a RunConfig, or the plain dict saved in old checkpoints)."""
    from rlcustom.config import to_dict

    c = to_dict(cfg) if not isinstance(cfg, dict) else cfg
    m, o = c.get("model") or {}, c.get("optim") or {}
    lora = m.get("lora")
    out: dict[str, Any] = {"trainer": c.get("trainer"), "model.path": m.get("path"), "model.dtype": m.get("dtype"),
                           "model.lora": lora is not None, "data.prompts": (c.get("data") or {}).get("prompts"),
                           "seed": c.get("seed")}
    if lora is not None:
        out.update({"model.lora.r": lora.get("r"), "model.lora.alpha": lora.get("alpha"),
                    "model.lora.target_modules": sorted(_plain(lora.get("target_modules") or []))})
    for k in ("lr", "betas", "eps", "weight_decay", "schedule", "warmup_steps", "total_steps"):
        out[f"optim.{k}"] = _plain(o.get(k))
    if fingerprint and m.get("path"):
        from rlcustom.models.files import fingerprint as fp

        d = local_model_dir(str(m["path"]))
        try:
            out["model.fingerprint"] = fp(d) if d is not None else None
        except Exception:  # noqa: BLE001 - an unreadable model is the preflight's to report, not identity's
            out["model.fingerprint"] = None
    return out


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, checkpoint value, config value) for every compared key both sides know and that differs."""
    out = []
    for k in COMPARED:
        if k in saved and k in now and saved[k] is not None and now[k] is not None and _plain(saved[k]) != _plain(now[k]):
            out.append((k, saved[k], now[k]))
    if saved.get("model.fingerprint") and saved.get("model.fingerprint") == now.get("model.fingerprint"):
        out = [d for d in out if d[0] != "model.path"]  # the same model, moved or named by its alias
    if saved.get("model.lora") is not None and now.get("model.lora") is not None and saved["model.lora"] != now["model.lora"]:
        out = [d for d in out if not d[0].startswith("model.lora.")]
    return out


@dataclass
class ResumePlan:
    path: Path | None
    state: dict[str, Any] = field(default_factory=dict)
    accepted: list[str] = field(default_factory=list)  # "key: old -> new" changes accepted by resume_force


def find_checkpoint(cfg) -> Path | None:
    """The checkpoint ``resume`` selects (``auto``: ``latest``, falling back to the newest complete one)."""
    r = cfg.resume
    if r == "never":
        return None
    if r == "auto":
        return CheckpointManager(cfg.output_dir, keep=cfg.keep_checkpoints).latest()
    p = Path(r).expanduser()
    if not p.is_dir():
        raise CheckpointError(f"resume: {r} is not auto, never or a checkpoint directory "
                              + ("(did you mean 'auto'?)" if _close(r, ("auto", "never")) else "(no such directory)"))
    return p


def _close(word: str, options: tuple[str, ...]) -> bool:
    import difflib

    return bool(difflib.get_close_matches(word, options, n=1))


def check_resume(cfg, stateful_roles: tuple[str, ...] = ("learner",),
                 roles_used: tuple[str, ...] = ("learner",)) -> ResumePlan:
    """Validate the checkpoint this run would resume from, before anything loads. One-line errors:
    :class:`CheckpointError` for a damaged checkpoint, :class:`ResumeMismatch` for one from another run."""
    path = find_checkpoint(cfg)
    if path is None:
        return ResumePlan(None)
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        raise CheckpointError(f"resume: {path} is not a checkpoint (no trainer_state.json)")
    state = read_state(path)
    if state is None:
        raise CheckpointError(f"resume: {state_file} is corrupt (not a JSON state with an integer 'step'; "
                              f"truncated?); pass resume=<an older checkpoint directory> or resume=never")
    for role in stateful_roles:
        if role not in roles_used:  # a role this trainer does not place writes nothing
            continue
        rdir = path / role
        if not rdir.is_dir():
            raise CheckpointError(f"resume: {path} has no {role}/ folder (written by another trainer, or damaged)")
        (_check_learner if role == "learner" else _check_role_files)(rdir, cfg, role)
    saved = state.get("identity") or identity(state.get("config") or {}, fingerprint=False)
    diffs = differences(saved, identity(cfg))
    accepted = []
    if diffs:
        k, old, new = diffs[0]
        more = f" (and {', '.join(d[0] for d in diffs[1:])})" if len(diffs) > 1 else ""
        if not getattr(cfg, "resume_force", False):
            raise ResumeMismatch(
                f"resume: {path} was trained with {k}={_show(old)}, this config has {k}={_show(new)}{more}; "
                f"set resume_force=true (--resume-force) to continue with the new value, resume=never to start "
                f"over, or use another output_dir")
        accepted = [f"{k}: {_show(o)} -> {_show(n)}" for k, o, n in diffs]
    return ResumePlan(path, state, accepted)


def _show(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def _check_zip(f: Path, role: str) -> None:
    if not f.is_file():
        raise CheckpointError(f"resume: {f} is missing ({role} state incomplete); pass resume=<an older checkpoint>"
                              " or resume=never")
    if not zipfile.is_zipfile(f):
        raise CheckpointError(f"resume: {f} is corrupt or truncated (not a torch.save archive)")


def _check_learner(d: Path, cfg, role: str) -> None:
    from rlcustom.models.files import check_architecture, lora_rank, read_header

    meta_f = d / "learner.json"
    try:
        meta = json.loads(meta_f.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"resume: {meta_f} is missing ({role} state incomplete)") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"resume: {meta_f} is corrupt (not JSON)") from None
    rc = cfg.roles.get(role)
    replicas = rc.replicas if rc is not None else 1
    zero = rc.zero_stage if rc is not None else 2
    if meta.get("world_size") != replicas or meta.get("zero_stage") != zero:
        raise CheckpointError(f"resume: {d} was written by {meta.get('world_size')} {role} rank(s) with ZeRO-"
                              f"{meta.get('zero_stage')}; roles.{role} has replicas={replicas}, zero_stage={zero} "
                              "(the optimizer state is partitioned per rank; this cannot be forced)")
    for r in range(int(meta.get("world_size") or 1)):
        _check_zip(d / f"optim_rank{r}.pt", role)
        _check_zip(d / f"rng_rank{r}.pt", role)
    weights = d / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"resume: {weights} is missing ({role} state incomplete)")
    try:
        shapes = {k: list(v["shape"]) for k, v in read_header(weights).items() if k != "__metadata__"}
    except Exception as e:  # noqa: BLE001 - ModelLoadError with the reason
        raise CheckpointError(f"resume: {e}") from None
    lora = cfg.model.lora
    saved_lora = bool(meta.get("lora"))
    if saved_lora != (lora is not None):
        raise CheckpointError(f"resume: {d} holds {'a LoRA adapter' if saved_lora else 'full weights'} but "
                              f"model.lora is {'set' if lora is not None else 'not set'} (this cannot be forced)")
    if lora is not None:
        r = lora_rank(shapes)
        if r is not None and r != lora.r:
            raise CheckpointError(f"resume: {d} holds a LoRA adapter of rank {r}, model.lora.r is {lora.r} "
                                  "(the tensors cannot be loaded at another rank; this cannot be forced: use "
                                  "resume=never or another output_dir)")
        targets = {k.split(".lora_A")[0].rsplit(".", 1)[-1] for k in shapes if ".lora_A" in k}
        if targets and targets != set(lora.target_modules):
            raise CheckpointError(f"resume: {d} adapts {sorted(targets)}, model.lora.target_modules is "
                                  f"{sorted(lora.target_modules)} (this cannot be forced)")
    else:
        md = local_model_dir(cfg.model.path)
        if md is not None:
            mcfg = json.loads((md / "config.json").read_text())
            try:
                check_architecture(mcfg, shapes, where=f"resume: {d} does not fit model.path {cfg.model.path}")
            except Exception as e:  # noqa: BLE001
                raise CheckpointError(str(e) + " (this cannot be forced)") from None


def _check_role_files(d: Path, cfg, role: str) -> None:
    """A value/critic folder (ValueModel layout): its optimizer and weights files are whole."""
    from rlcustom.models.files import read_header

    if (d / "optimizer.pt").exists():
        _check_zip(d / "optimizer.pt", role)
    for f in d.glob("*.safetensors"):
        try:
            read_header(f)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"resume: {e}") from None
