"""One preflight before anything starts: every check that needs no Ray and no model weights.

Every CLI command runs it right after its config loads (:func:`preflight_args`), and ``run_trainer`` runs it
for programmatic use (:func:`preflight`; once per config object). A failure is a :class:`PreflightError`: one
line naming the key, file or flag and what to do. What it checks:

* paths: ``output_dir`` and every ``--out`` creatable and writable (a real probe: root ignores permission
  bits); ``--out`` never an existing directory and never one of the command's inputs (prompts file, config,
  model files); the model cache writable when an alias still has to be prepared;
* names: trainer (near match), role names under ``roles:`` against the trainer's roles, ``colocate_with``,
  advantage estimator / objective / loss / KL estimator fields of ``algo:``, reward specs (``module:fn``
  imported), a model or loglik reward without ``model_path``, an http reward without ``url``;
* models: directory completeness (``config.json``, safetensors weights whole, tokenizer) and
  ``config.json`` vs the weights' shapes (:mod:`rlcustom.models.files`); LoRA target modules that match nothing;
* the ``resume`` value; the checkpoint it would load is checked next, after the prompt data, by
  ``Trainer.preflight`` (:func:`rlcustom.trainers.checkpoint_identity.check_resume`), still before Ray;
* ``tracking.mode=online`` without a W&B key; ``cluster.address`` reachable within 3 s;
* counts given on the command line (``--limit 0``).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from rlcustom.errors import RLCustomError

_CHECKED: dict[tuple, Any] = {}  # (id(cfg), command) -> cfg: run_trainer after the CLI does not check twice
# algo.objective of ppo/pg names a policy-loss plan (trainers/objective_plan.py), checked by check_objective
_NAME_FIELDS = {"advantage": "ADV_ESTIMATORS", "adv_estimator": "ADV_ESTIMATORS", "kl_estimator": "KL_ESTIMATORS"}


class PreflightError(RLCustomError, ValueError):
    """A mistake found before anything started: names the key, file or flag."""


# --------------------------------------------------------------------------- entry points


def preflight_args(cfg, args: Any) -> None:
    """The CLI hook: ``preflight`` with what an argparse/typer namespace carries (``command``, ``out``, counts,
    ``config``, ``policy``/``reference``, ``rescore``)."""
    g = lambda k: getattr(args, k, None)  # noqa: E731
    counts = {f"--{k.replace('_', '-')}": g(k) for k in ("limit", "pairs", "new_tokens", "n")}  # --replayed 0 is valid
    models = {"--policy": g("policy"), "--reference": g("reference")}
    preflight(cfg, g("command") or "train", out=None if g("rescore") else g("out"), config_path=g("config"),
              counts=counts, models=models)


def preflight(cfg, command: str = "train", *, out: str | os.PathLike | None = None,
              config_path: str | os.PathLike | None = None, counts: Mapping[str, int | None] | None = None,
              models: Mapping[str, str | None] | None = None) -> None:
    """Run every check that applies to ``command`` (generate, train, demo, eval, submit); raises PreflightError."""
    key = (id(cfg), command, str(out))
    if _CHECKED.get(key) is cfg:
        return
    try:
        _run(cfg, command, out, config_path, counts or {}, models or {})
    except PreflightError:
        raise
    except RLCustomError as e:  # ModelLoadError, CheckpointError, RewardSpecError ...: already one line
        raise PreflightError(str(e)) from None
    _CHECKED[key] = cfg


def _run(cfg, command: str, out, config_path, counts: Mapping, models: Mapping) -> None:
    for flag, v in counts.items():
        if isinstance(v, int) and not isinstance(v, bool) and v < 1:
            raise PreflightError(f"{flag} must be at least 1, got {v}")
    generating = command == "generate" or (command in ("demo", "submit") and cfg.trainer == "generate")
    training = not generating and command in ("train", "demo", "submit")
    if command == "train" and cfg.trainer == "generate":
        src = f"{config_path} sets no trainer" if config_path else "no trainer is set"
        raise PreflightError(f"{src} (trainer 'generate' is run by `rlcustom generate`); set trainer: to one of "
                             f"{', '.join(_trainers().names())}")
    trainer = check_trainer(cfg) if training else None
    if trainer is not None:
        check_roles(cfg, trainer)
        check_algo_names(cfg)
        if "reward" in trainer.roles_used:
            check_reward(cfg.reward.spec, cfg.reward.model_path, cfg.reward.url, "reward")
        for key, spec, mp, url in _nested_rewards(cfg.algo, "algo"):
            check_reward(spec, mp, url, key)
    check_tracking(cfg)
    if command == "submit":  # paths, models and the cluster are the cluster's: checked there
        return
    check_output_dir(cfg.output_dir)
    inputs = _inputs(cfg, config_path)
    if out is not None:
        check_out_file(out, inputs)
    check_model(cfg.model.path, "model.path", lora=cfg.model.lora)
    for flag, path in models.items():
        if path:
            check_model(path, flag)
    if cfg.reward.spec == "loglik" and cfg.reward.model_path and (training or command == "eval"):
        check_model(cfg.reward.model_path, "reward.model_path", need_tokenizer=False)
    if not generating and trainer is not None and cfg.resume not in ("auto", "never"):
        from rlcustom.trainers.checkpoint_identity import find_checkpoint

        find_checkpoint(cfg)  # a resume typo now; the checkpoint itself after the data (Trainer.preflight)
    if training:
        check_cluster(cfg.cluster.address)


# --------------------------------------------------------------------------- names


def _trainers():
    from rlcustom.config import load_plugins
    from rlcustom.registry import TRAINERS

    load_plugins()  # the built-in trainers (and plugins) registered, by name: trainers import this module

    return TRAINERS


def check_trainer(cfg):
    """The trainer instance (cheap: no Ray) whose roles the rest of the checks use."""
    reg = _trainers()
    if cfg.trainer not in reg:
        close = difflib.get_close_matches(cfg.trainer, reg.names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(reg.names())})"
        raise PreflightError(f"unknown trainer '{cfg.trainer}'{hint}")
    return reg.get(cfg.trainer)(cfg)


def _all_roles() -> set[str]:
    """Roles some built-in trainer places: a config shared by several trainers may set them all."""
    out = {"rollout", "learner", "reward", "reference", "critic", "value"}
    for name in _trainers().names():
        ru = getattr(_trainers().get(name), "roles_used", ())
        if isinstance(ru, tuple):
            out.update(ru)
    return out


def check_roles(cfg, trainer) -> None:
    used = list(trainer.roles_used)
    for name, rc in cfg.roles.items():
        if name not in used and name in _all_roles():  # a real role another trainer uses: said, not fatal
            from rlcustom.trainers.checkpoint import _note

            _note(f"note: roles.{name} is not used by trainer '{cfg.trainer}' (its roles: {', '.join(used)})")
        elif name not in used:
            close = difflib.get_close_matches(name, used, n=1)
            hint = f"did you mean 'roles.{close[0]}'? " if close else ""
            raise PreflightError(f"key 'roles.{name}': trainer '{cfg.trainer}' has no role '{name}' "
                                 f"({hint}its roles: {', '.join(used)})")
        if rc.colocate_with is not None and rc.colocate_with not in used:
            close = difflib.get_close_matches(rc.colocate_with, used, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise PreflightError(f"key 'roles.{name}.colocate_with': no role '{rc.colocate_with}' "
                                 f"({hint}roles: {', '.join(used)})")
        if rc.share != "auto" and name != "reference":
            raise PreflightError(f"key 'roles.{name}.share': only the reference role can be shared (with the learner)")
    if "reference" in used:
        from rlcustom.trainers.roles import reference_on_learner

        try:
            reference_on_learner(cfg, getattr(trainer, "reference_shareable", False))
        except ValueError as e:
            raise PreflightError(str(e)) from None


def _load_registries() -> None:
    """Registries fill on import of the modules that define the entries: the built-ins, in one place."""
    from rlcustom.config import load_plugins

    load_plugins()


def check_objective(cfg) -> None:
    """``algo.objective`` (ppo, pg): a known policy loss with known ``objective_kwargs`` (one line if not)."""
    a = cfg.algo
    if not isinstance(getattr(a, "objective", None), str) or not hasattr(a, "objective_kwargs"):
        return
    from rlcustom.trainers.objective_plan import plan_objective

    plan_objective(a.objective, a.objective_kwargs or {}, clip_eps=getattr(a, "clip_eps", 0.2),
                   agg=getattr(a, "agg", "token"), max_new_tokens=cfg.sampling.max_new_tokens)


def check_algo_names(cfg) -> None:
    """``algo.advantage``, ``algo.kl_estimator`` ... (also nested) name registered entries; ``algo.objective``."""
    import rlcustom.registry as R

    check_objective(cfg)

    found = list(_named_fields(cfg.algo, "algo"))
    if not found:
        return
    _load_registries()
    for key, field, value in found:
        reg = getattr(R, _NAME_FIELDS[field])
        if value not in reg:
            close = difflib.get_close_matches(value, reg.names(), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(reg.names())})"
            raise PreflightError(f"key '{key}': unknown {reg.kind} '{value}'{hint}")


def _named_fields(obj: Any, prefix: str) -> Iterable[tuple[str, str, str]]:
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if f.name in _NAME_FIELDS and isinstance(v, str):
                yield f"{prefix}.{f.name}", f.name, v
            else:
                yield from _named_fields(v, f"{prefix}.{f.name}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _named_fields(v, f"{prefix}[{i}]")


def _nested_rewards(obj: Any, prefix: str) -> Iterable[tuple[str, str, str | None, str | None]]:
    """Reward specs inside ``algo:`` (L3M's constraints: ``reward``, ``model_path``, ``url`` side by side)."""
    if dataclasses.is_dataclass(obj):
        names = {f.name for f in dataclasses.fields(obj)}
        if "reward" in names and isinstance(getattr(obj, "reward"), str):
            yield f"{prefix}.reward", obj.reward, getattr(obj, "model_path", None), getattr(obj, "url", None)
        for f in dataclasses.fields(obj):
            if f.name != "reward":
                yield from _nested_rewards(getattr(obj, f.name), f"{prefix}.{f.name}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _nested_rewards(v, f"{prefix}[{i}]")


def check_reward(spec: str, model_path: str | None, url: str | None, key: str) -> None:
    base = key[: -len(".reward")] if key.endswith(".reward") else key
    spec_key = key if key.endswith(".reward") else f"{key}.spec"
    if spec in ("model", "loglik"):
        if not model_path:
            raise PreflightError(f"key '{spec_key}': reward '{spec}' needs {base}.model_path (a "
                                 f"{'reward-model' if spec == 'model' else 'causal LM'} directory)")
        if spec == "model":
            d = Path(model_path).expanduser()
            if not d.is_dir():
                raise PreflightError(f"key '{base}.model_path': {model_path}: no such reward-model directory")
        return
    if spec == "http":
        if not url:
            raise PreflightError(f"key '{spec_key}': reward 'http' needs {base}.url")
        return
    from rlcustom.rewards import resolve_reward

    try:
        resolve_reward(spec)
    except RLCustomError as e:
        raise PreflightError(f"key '{spec_key}': {e}") from None


# --------------------------------------------------------------------------- paths


def _probe_dir(d: Path, what: str) -> None:
    """``d`` exists: it is a directory we can create files in (a real probe, removed at once)."""
    if not d.is_dir():
        raise PreflightError(f"{what}: {d} exists and is not a directory")
    try:
        fd, name = tempfile.mkstemp(prefix=".rlcustom-probe-", dir=d)
    except OSError as e:
        raise PreflightError(f"{what}: cannot write in {d} ({e.strerror or type(e).__name__})") from None
    os.close(fd)
    os.unlink(name)


def check_creatable_dir(path: str | os.PathLike, what: str) -> None:
    """``path`` is a writable directory, or can be created as one (nothing is created)."""
    p = Path(path).expanduser().absolute()
    if p.exists():
        _probe_dir(p, what)
        return
    anc = p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise PreflightError(f"{what}: {path} cannot be created: {anc} is a file, not a directory")
    _probe_dir(anc, f"{what}: {path} cannot be created")


def check_output_dir(output_dir: str) -> None:
    check_creatable_dir(output_dir, "output_dir")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_out_file(out: str | os.PathLike, inputs: Mapping[str, Path], flag: str = "--out") -> None:
    """``out`` is a file we may (re)write: not a directory, not an input, its folder writable."""
    p = Path(out).expanduser()
    if p.is_dir():
        raise PreflightError(f"{flag} {out}: is a directory; give a file path (e.g. {Path(out) / 'out.jsonl'})")
    if p.exists() and not p.is_file():
        raise PreflightError(f"{flag} {out}: exists and is not a regular file")
    for what, inp in inputs.items():
        if _same(p, inp):
            raise PreflightError(f"{flag} {out} is the {what} this command reads; writing it would replace your "
                                 f"data: choose another path")
    check_creatable_dir(p.parent if str(p.parent) else ".", f"{flag} {out}")
    if p.exists():
        try:
            with p.open("ab"):  # opening to append writes nothing
                pass
        except OSError as e:
            raise PreflightError(f"{flag} {out}: not writable ({e.strerror})") from None


def _inputs(cfg, config_path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if config_path and Path(config_path).is_file():
        out["config file"] = Path(config_path)
    if cfg.data.prompts and cfg.data.prompts != "hh-rlhf":
        out["prompts file (data.prompts)"] = Path(cfg.data.prompts).expanduser()
    from rlcustom.trainers.checkpoint_identity import local_model_dir

    d = local_model_dir(cfg.model.path)
    if d is not None:
        for f in d.iterdir():
            out[f"model file {f.name}"] = f
    return out


# --------------------------------------------------------------------------- models, W&B, cluster


def check_model(path: str, key: str, *, lora=None, need_tokenizer: bool = True) -> None:
    """Files and config-vs-weights of a model directory; an alias not prepared yet needs a writable cache."""
    from rlcustom.models.embedded import EMBEDDED, cache_root
    from rlcustom.models.files import check_model_dir, module_names, tensor_shapes
    from rlcustom.models.loading import resolve_model_path

    if path in EMBEDDED and not (cache_root() / path / ".complete").is_file():
        check_creatable_dir(cache_root(), f"{key}={path} is prepared into the model cache (RLCUSTOM_CACHE)")
        return
    try:
        d = resolve_model_path(path)
    except RLCustomError as e:
        raise PreflightError(f"{key}: {e}") from None
    check_model_dir(d, what=key, need_tokenizer=need_tokenizer)
    if lora is not None:
        names = module_names(tensor_shapes(d))
        for t in lora.target_modules:
            if t not in names and not any(t in n for n in names):
                close = difflib.get_close_matches(t, sorted(names), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise PreflightError(f"key 'model.lora.target_modules': '{t}' matches no module of {path}{hint}")


def _wandb_netrc() -> bool:
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_tracking(cfg) -> None:
    mode = cfg.tracking.mode  # what the Tracker passes to wandb.init (it wins over $WANDB_MODE)
    if mode == "online" and not os.environ.get("WANDB_API_KEY") and not _wandb_netrc():
        raise PreflightError("tracking.mode=online but no W&B key: set WANDB_API_KEY (or run `wandb login`), "
                             "or use tracking.mode=offline")


def check_cluster(address: str | None, timeout_s: float = 3.0) -> None:
    """``cluster.address`` answers a TCP connect; ``auto`` needs a running cluster on this machine."""
    if not address:
        return
    if address == "auto":
        env = os.environ.get("RAY_ADDRESS")
        if env and env != "auto":
            return check_cluster(env, timeout_s)
        if not Path(tempfile.gettempdir(), "ray", "ray_current_cluster").is_file():
            raise PreflightError("cluster.address=auto: no running Ray cluster on this machine (start one with "
                                 "`ray start --head`, or unset cluster.address to start a local Ray)")
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise PreflightError(f"cluster.address={address}: expected host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise PreflightError(f"cluster.address={address}: not reachable within {timeout_s:g} s "
                             f"({e.strerror or type(e).__name__}); is the head running?") from None
