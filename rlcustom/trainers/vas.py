"""Value Augmented Sampling: fit the value estimator ``V^{pi_0}`` of the frozen policy with TD(lambda).

Han et al. 2024, Section 3.3 / Appendix C.1: sample responses from the frozen ``pi_0``
(temperature 0.7 in the paper), score them with the reward function, and regress a
separate value model on TD(lambda) targets (lambda 0.95; lambda 1 is the "Online
FUDGE" baseline, plain regression on the final reward). Decoding then uses
:func:`rlcustom.decoding.vas.vas_decoder` with ``OUTPUT_DIR/value``.

The trainer:

1. *Data* (once): ``algo.samples`` completions from the rollout actors
   (``algo.samples_per_prompt`` per prompt), scored by the reward actor, written to
   ``algo.dataset`` (default ``OUTPUT_DIR/vas_samples.jsonl``) with the settings that made
   them in ``<dataset>.meta.json``. An existing dataset with the same settings is reused
   (also by another run that points ``algo.dataset`` at it); with other settings the
   default path is regenerated and an explicit path is an error. A JSONL without a meta
   file is used as given (rows: ``prompt_ids``, ``response_ids``, ``reward``). Samples of a
   seeded ``algo.val_fraction`` of the *prompts* are held out for validation.
2. *Steps*: ``algo.batch_size`` training samples (seeded epoch order), the value actor's
   current ``V(s_t)``, ``G = td_lambda_targets(V, r, mask, gamma, lam)`` with the sequence
   reward on the last valid token, then ``ValueActor.train_step(batch | {"targets": G},
   "value_mse")``. Every ``algo.eval_every`` steps (and at the last): ``value/val_mse``,
   the token-mean squared error against the Monte-Carlo return (the sample's reward) on
   the held-out samples -- an unbiased (noisy) target for ``V^{pi_0}``, independent of the
   model being trained, so runs with different lambdas are comparable.
3. *End*: the value model is written to ``OUTPUT_DIR/value`` (``ValueModel.save`` layout).

Terminal state (``algo.terminal_state``, default on): VAS scores children ``s ⊕ x`` and
one child is often EOS, whose next state is terminal; its value must be the reward of
the finished response. The value actor reads ``V`` only at states *before* each response
token, so a terminal state would never be trained and ``V(s ⊕ EOS)`` would be an
untrained extrapolation. With ``terminal_state`` each training response gets one extra
masked-in slot (a pad token that is never read as input of a value): ``V`` is then also
fitted at the state after the last token, with the reward placed on that slot (the last
valid token of the padded row), so ``V(s_T) -> r`` and the TD(lambda) recursion runs
through it. Off: the reward sits on the last generated token, exactly as the bare spec.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlcustom.config import bounds, non_negative, positive, register_section, to_dict, unit_interval
from rlcustom.errors import RLCustomError
from rlcustom.fsutil import atomic_write_text
from rlcustom.trainers.base import register_trainer
from rlcustom.trainers.pipeline import PipelineTrainer, Step
from rlcustom.trainers.roles import build_reward, build_rollout, build_value, first_last


@register_section("vas")
@dataclass(frozen=True)
class VASConfig:
    samples: int = field(default=1024, metadata=positive)  # completions of pi_0 to sample and label (total)
    samples_per_prompt: int = field(default=4, metadata=positive)  # completions per prompt
    prompts_per_batch: int = field(default=16, metadata=positive)  # prompts per generate call while sampling
    temperature: float | None = field(default=0.7, metadata=non_negative)  # sampling temperature (None: sampling.temperature)
    dataset: str | None = None  # JSONL of labelled samples (None: OUTPUT_DIR/vas_samples.jsonl)
    val_fraction: float = field(default=0.1, metadata=bounds(ge=0, lt=1))  # held-out prompts
    batch_size: int = field(default=32, metadata=positive)  # samples per value update
    lam: float = field(default=0.95, metadata=unit_interval)  # TD(lambda); 1 = Online FUDGE (Monte-Carlo regression)
    gamma: float = field(default=1.0, metadata=unit_interval)  # discount
    eval_every: int = field(default=10, metadata=non_negative)  # validation MSE every N steps (0: only at the end)
    value_model: str | None = None  # value backbone: a causal LM path/alias (None: model.path) or a ValueModel dir
    value_layers: int | None = field(default=None, metadata=positive)  # keep the first N decoder layers (None: all)
    lr: float | None = field(default=None, metadata=positive)  # value learning rate (None: optim.lr)
    terminal_state: bool = True  # also fit V at the state after the last token (target: the reward)


def _settings(cfg) -> dict:
    """What determines the dataset: a run with equal settings reuses it."""
    a = cfg.algo
    return {"format": 1, "model": cfg.model.path, "dtype": cfg.model.dtype, "reward": to_dict(cfg.reward),
            "data": to_dict(cfg.data), "sampling": to_dict(cfg.sampling), "temperature": a.temperature,
            "samples": a.samples, "samples_per_prompt": a.samples_per_prompt, "seed": cfg.seed}


def _held_out(prompt_ids: list[int], fraction: float, seed: int) -> bool:
    h = hashlib.sha256(f"{seed}:{','.join(map(str, prompt_ids))}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


def td_batch(rows: list[dict], pad_id: int, terminal_state: bool = True) -> tuple[dict, torch.Tensor]:
    """(padded batch, rewards [B, T]) for value training: the reward on the last valid slot of each row.

    With ``terminal_state`` each response gets one extra slot (``pad_id``) so that the
    state after the last real token is a trained state (its value is read at the last
    real token's column; the extra token itself is never read)."""
    from rlcustom.engines.base import Rollouts

    resp = [list(r["response_ids"]) + ([pad_id] if terminal_state else []) for r in rows]
    ro = Rollouts([list(r["prompt_ids"]) for r in rows], resp, [[0.0] * len(x) for x in resp],
                  ["stop"] * len(rows), list(range(len(rows))))
    batch = ro.padded(pad_id)
    rewards = torch.zeros_like(batch["response_mask"])
    for i, x in enumerate(resp):
        if x:
            rewards[i, len(x) - 1] = float(rows[i]["reward"])
    return batch, rewards


@register_trainer("vas")
class VASTrainer(PipelineTrainer):
    """Sample + label with pi_0 once (the pipeline's generate and score stages), then fit a value model with
    TD(lambda) (VAS Section 3.3); ``step()`` is the value update."""

    roles_used = ("rollout", "reward", "value")
    stateful_roles = ("value",)

    def build(self) -> None:
        a = self.cfg.algo
        build_rollout(self)
        build_reward(self)
        if self.role_cfg("value").replicas > 1:  # its steps call one actor; ranks would wait in a collective
            from rlcustom.errors import ConfigError

            raise ConfigError("roles.value.replicas: the vas trainer fits its value model on 1 replica; "
                              "give it more cpus/gpus instead")
        self.value = build_value(self, "value", model_path=a.value_model, lr=a.lr, num_layers=a.value_layers)
        self.train_rows: list[dict] | None = None
        self.val_rows: list[dict] = []

    # ------------------------------------------------------------------ data
    @property
    def dataset_path(self) -> Path:
        a = self.cfg.algo
        return Path(a.dataset) if a.dataset else self.out_dir / "vas_samples.jsonl"

    def _load_or_sample(self) -> dict[str, float]:
        path = self.dataset_path
        meta_path = path.with_name(path.name + ".meta.json")
        want = _settings(self.cfg)
        stats: dict[str, float] = {}
        if path.is_file():
            if not meta_path.is_file():
                self.event(f"vas: using {path} as given (no {meta_path.name}: settings unknown)")
                rows = _read_jsonl(path)
            else:
                have = json.loads(meta_path.read_text())
                if have == want:
                    self.event(f"vas: reusing {path} (same settings)")
                    rows = _read_jsonl(path)
                elif self.cfg.algo.dataset:
                    diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
                    raise RLCustomError(f"vas: {path} was sampled with other settings (differ: {', '.join(diff)}); "
                                        "delete it or set algo.dataset to another file")
                else:
                    self.event(f"vas: {path} has other settings; sampling again")
                    rows = None
        else:
            rows = None
        if rows is None:
            with self.timer("sample"):
                rows, stats = self._sample()
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
            atomic_write_text(meta_path, json.dumps(want, indent=2, sort_keys=True) + "\n")
        rows = [r for r in rows if r.get("prompt_ids") and r.get("response_ids") is not None]
        if not rows:
            raise RLCustomError(f"vas: {path} holds no usable samples")
        frac, seed = self.cfg.algo.val_fraction, self.cfg.seed
        self.val_rows = [r for r in rows if _held_out(r["prompt_ids"], frac, seed)]
        self.train_rows = [r for r in rows if not _held_out(r["prompt_ids"], frac, seed)]
        if not self.train_rows:  # tiny prompt sets: keep training data at the cost of validation
            self.train_rows, self.val_rows = rows, []
        rewards = torch.tensor([float(r["reward"]) for r in rows])
        return stats | {"reward/dataset_mean": float(rewards.mean()), "reward/dataset_std": float(rewards.std())
                        if len(rows) > 1 else 0.0, "value/train_samples": float(len(self.train_rows)),
                        "value/val_samples": float(len(self.val_rows))}

    def _sample(self) -> tuple[list[dict], dict[str, float]]:
        """``algo.samples`` completions of pi_0 with their rewards: the pipeline's generate and score stages over
        the sampler's prompt stream, from its start (the dataset depends on the settings only)."""
        a, cfg, sampler = self.cfg.algo, self.cfg, self.sampler
        params = cfg.sampling.params(seed=cfg.seed * 100003)
        if a.temperature is not None:
            params = params.with_(temperature=a.temperature)
        params = params.with_(n=a.samples_per_prompt)
        sampler.load_state_dict({"position": 0})
        rows: list[dict] = []
        call = 0
        while len(rows) < a.samples:
            need = -(-(a.samples - len(rows)) // a.samples_per_prompt)
            idx = sampler.take_indices(min(a.prompts_per_batch, need))
            s = Step(prompts=[sampler.prompts.ids[i] for i in idx], params=params.with_(seed=params.seed + 7 * call))
            self.generate(s)
            self.score(s)
            ro = s.ro
            for i in range(len(ro)):
                rows.append({"prompt_ids": ro.prompt_ids[i], "response_ids": ro.response_ids[i],
                             "reward": float(s.scores[i]), "finish_reason": ro.finish_reasons[i],
                             "prompt_index": int(idx[ro.prompt_index[i]]), "completion": ro.texts[i]})
            call += 1
        rows = rows[: a.samples]
        tok = sampler.tokenizer
        self.samples = ([tok.decode(r["prompt_ids"]) for r in rows[:16]], [r["completion"] for r in rows[:16]],
                        [r["reward"] for r in rows[:16]])
        lens = [len(r["response_ids"]) for r in rows]
        return rows, {"rollout/response_len": sum(lens) / len(lens), "rollout/samples": float(len(rows))}

    def score(self, s: Step) -> None:
        """Rewards as the reward actors return them (Python floats, written to the dataset unrounded)."""
        g = self.groups["reward"]
        s.scores = g.gather(g.scatter("score", s.ro), "reward")

    def _next_rows(self, n: int) -> list[dict]:
        rows = self.train_rows or []
        out = []
        for j in range(self.step_idx * n, self.step_idx * n + n):
            epoch, pos = divmod(j, len(rows))
            order = list(range(len(rows)))
            random.Random(self.cfg.seed * 1000 + epoch).shuffle(order)
            out.append(rows[order[pos]])
        return out

    # ------------------------------------------------------------------ steps
    def _value_actor(self):
        return self.value.actors[0]  # one replica (build refuses more)

    def val_mse(self) -> float:
        a = self.cfg.algo
        total, n_tok = 0.0, 0.0
        for s in range(0, len(self.val_rows), 64):
            batch, rewards = td_batch(self.val_rows[s : s + 64], self.pad_id, a.terminal_state)
            mask = batch["response_mask"]
            mc = td_lambda_mc(rewards, mask, a.gamma)
            n = float(mask.sum())
            loss = self.value.get(self._value_actor().eval_loss.remote(batch | {"targets": mc}, "value_mse"),
                                  "value.eval_loss")
            total, n_tok = total + loss * n, n_tok + n
        return total / max(n_tok, 1.0)

    def step(self) -> dict[str, float]:
        from rlcustom.algos.td_lambda import td_lambda_targets

        a = self.cfg.algo
        stats: dict[str, float] = {}
        if self.train_rows is None:
            stats |= self._load_or_sample()
        rows = self._next_rows(a.batch_size)
        batch, rewards = td_batch(rows, self.pad_id, a.terminal_state)
        actor = self._value_actor()
        with self.timer("values"):
            values = self.value.get(actor.values.remote(batch), "value.values")
        targets = td_lambda_targets(values, rewards, batch["response_mask"], gamma=a.gamma, lam=a.lam)
        with self.timer("train"):
            stats |= self.value.get(actor.train_step.remote(batch | {"targets": targets}, "value_mse"),
                                    "value.train_step")
        last = self.step_idx + 1 >= self.cfg.steps
        if self.val_rows and (last or (a.eval_every and (self.step_idx + 1) % a.eval_every == 0)):
            with self.timer("eval"):
                stats["value/val_mse"] = self.val_mse()
        if last:
            with self.timer("save"):
                self.value.get(actor.save.remote(str(self.out_dir / "value"), False), "value.save")
        mask = batch["response_mask"]
        stats |= {"reward/mean": float(torch.tensor([float(r["reward"]) for r in rows]).mean()),
                  "value/target_mean": float((targets * mask).sum() / mask.sum().clamp(min=1)),
                  "rollout/response_len": float(sum(len(r["response_ids"]) for r in rows) / len(rows))}
        return stats | self.timer.summary()

    def summary(self, history: list[dict]) -> list[str]:
        lines = [first_last(history, "value/loss")]
        if any("value/val_mse" in h for h in history):
            lines.append(first_last(history, "value/val_mse", k=1))
        lines.append(f"value model: {self.out_dir / 'value'} (decode: --decoder vas --value {self.out_dir / 'value'})")
        lines.append(f"samples: {self.dataset_path}")
        return lines


def td_lambda_mc(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Monte-Carlo returns (TD(1) targets; they do not depend on the values)."""
    from rlcustom.algos.td_lambda import td_lambda_targets

    return td_lambda_targets(torch.zeros_like(rewards), rewards, mask, gamma=gamma, lam=1.0)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise RLCustomError(f"{path}:{i}: not valid JSON: {e}") from None
    return rows
