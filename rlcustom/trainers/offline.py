"""Trainers on fixed datasets: SFT and DPO (the baselines the papers compare against)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field


from rlcustom.config import positive, register_section
from rlcustom.trainers.base import Trainer, register_trainer
from rlcustom.trainers.roles import build_learner, build_reference, first_last


def encode_pairs(tok, prompts: list[str], completions: list[str], max_prompt: int, max_completion: int):
    """Chat-formatted prompt ids (left-truncated) and completion ids + EOS (right-truncated)."""
    from rlcustom.engines.base import Rollouts

    p_ids = [tok(p, add_special_tokens=False)["input_ids"][-max_prompt:] for p in prompts]
    c_ids = [(tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])[:max_completion] for c in completions]
    return Rollouts(p_ids, c_ids, [[0.0] * len(c) for c in c_ids], ["stop"] * len(c_ids), list(range(len(c_ids))))


def epoch_rows(rows: list, start: int, n: int, seed: int) -> list:
    """Rows ``start .. start+n-1`` of an endless stream of seeded per-epoch shuffles of ``rows``
    (a pure function of the position, so a resumed run reads exactly what it would have)."""
    out = []
    for j in range(start, start + n):
        epoch, pos = divmod(j, len(rows))
        order = list(range(len(rows)))
        random.Random(seed * 1000 + epoch).shuffle(order)
        out.append(rows[order[pos]])
    return out


class DatasetTrainer(Trainer):
    """Shared by SFT/DPO: a seeded epoch order over a dataset; position = step * batch size."""

    def load_rows(self, rows: list[dict]) -> None:
        from rlcustom.data.chat import format_prompt
        from rlcustom.models.loading import load_tokenizer

        self.tok = load_tokenizer(self.cfg.model.path, trust_remote_code=self.cfg.model.trust_remote_code)
        for r in rows:
            r["prompt_text"] = format_prompt(self.tok, r.get("messages") or r["prompt"],
                                             use_chat_template=self.cfg.data.chat_template)
        self.rows = rows

    def next_rows(self, n: int) -> list[dict]:
        return self.next_rows_at(self.step_idx, n)

    def next_rows_at(self, step: int, n: int) -> list[dict]:
        return epoch_rows(self.rows, step * n, n, self.cfg.seed)


@register_section("sft")
@dataclass(frozen=True)
class SFTConfig:
    batch_size: int = field(default=8, metadata=positive)  # examples per optimizer step
    max_completion_tokens: int = field(default=256, metadata=positive)  # most reply tokens per example, EOS included


@register_trainer("sft")
class SFTTrainer(DatasetTrainer):
    """Next-token NLL on completions only (prompt tokens masked)."""

    roles_used = ("learner",)

    def build(self) -> None:
        from rlcustom.data.loaders import load_sft

        d = self.cfg.data
        build_learner(self)
        self.load_rows(list(load_sft(d.prompts, split=d.split, val_fraction=d.val_fraction, seed=d.split_seed,
                                     on_bad_record=d.on_bad_record, limit=d.limit)))

    def step(self) -> dict[str, float]:
        rows = self.next_rows(self.cfg.algo.batch_size)
        ro = encode_pairs(self.tok, [r["prompt_text"] for r in rows], [r["completion"] for r in rows],
                          self.cfg.data.max_prompt_tokens, self.cfg.algo.max_completion_tokens)
        with self.timer("train"):
            stats = self.learner_train(ro.padded(self.tok.pad_token_id), "sft")
        return stats | self.timer.summary()

    def summary(self, history: list[dict]) -> list[str]:
        return [first_last(history, "train/nll")]


@register_section("dpo")
@dataclass(frozen=True)
class DPOConfig:
    pairs_per_step: int = field(default=8, metadata=positive)  # preference pairs per optimizer step
    beta: float = field(default=0.1, metadata=positive)  # DPO temperature (Rafailov et al. 2023)
    label_smoothing: float = 0.0  # conservative DPO; 0 = standard
    max_completion_tokens: int = field(default=256, metadata=positive)  # most reply tokens per example, EOS included


@register_trainer("dpo")
class DPOTrainer(DatasetTrainer):
    """DPO from a frozen reference (the same initial model: on its own actor, or for LoRA the learner with
    its adapter disabled, ``roles.reference.share``)."""

    roles_used = ("learner", "reference")
    reference_shareable = True  # the reference is the initial policy: a LoRA learner serves it (roles.reference.share)

    def build(self) -> None:
        from rlcustom.data.loaders import load_preference_pairs

        d = self.cfg.data
        build_learner(self)
        build_reference(self)
        self.load_rows(list(load_preference_pairs(d.prompts, split=d.split, val_fraction=d.val_fraction,
                                                  seed=d.split_seed, on_bad_record=d.on_bad_record, limit=d.limit)))

    def step(self) -> dict[str, float]:
        a = self.cfg.algo
        rows = self.next_rows(a.pairs_per_step)
        prompts = [r["prompt_text"] for r in rows for _ in (0, 1)]
        answers = [x for r in rows for x in (r["chosen"], r["rejected"])]  # interleaved: chosen, rejected
        batch = encode_pairs(self.tok, prompts, answers, self.cfg.data.max_prompt_tokens,
                             a.max_completion_tokens).padded(self.tok.pad_token_id)
        with self.timer("reference"):
            g = self.groups["reference"]
            ref_lp = g.gather(g.scatter("logprobs", batch), "reference")
        batch["ref_logps"] = (ref_lp * batch["response_mask"]).sum(1)
        with self.timer("train"):
            stats = self.learner_train(batch, "dpo", beta=a.beta, label_smoothing=a.label_smoothing)
        return stats | self.timer.summary()

    def summary(self, history: list[dict]) -> list[str]:
        return [first_last(history, "train/reward_accuracy"), first_last(history, "train/dpo_loss")]


@register_section("reward")
@dataclass(frozen=True)
class RewardTrainConfig:
    pairs_per_step: int = field(default=8, metadata=positive)  # preference pairs per optimizer step
    max_completion_tokens: int = field(default=256, metadata=positive)  # most reply tokens per example, EOS included
    eval_pairs: int = field(default=64, metadata=positive)  # held-out pairs scored at the end
    backbone_layers: int | None = field(default=None, metadata=positive)  # keep the first N layers (None: all)


@register_trainer("reward")
class RewardTrainer(DatasetTrainer):
    """Bradley-Terry reward model: an LM backbone with a scalar head, trained on preference pairs."""

    roles_used = ("learner",)

    def build(self) -> None:
        from rlcustom.data.loaders import load_preference_pairs

        d = self.cfg.data
        build_learner(self, model_kind="reward", num_layers=self.cfg.algo.backbone_layers)
        self.load_rows(list(load_preference_pairs(d.prompts, split=d.split, val_fraction=d.val_fraction,
                                                  seed=d.split_seed, on_bad_record=d.on_bad_record, limit=d.limit)))

    def pair_batch(self, rows: list[dict]) -> dict:
        prompts = [r["prompt_text"] for r in rows for _ in (0, 1)]
        answers = [x for r in rows for x in (r["chosen"], r["rejected"])]
        return encode_pairs(self.tok, prompts, answers, self.cfg.data.max_prompt_tokens,
                            self.cfg.algo.max_completion_tokens).padded(self.tok.pad_token_id)

    def step(self) -> dict[str, float]:
        with self.timer("train"):
            stats = self.learner_train(self.pair_batch(self.next_rows(self.cfg.algo.pairs_per_step)), "bt_reward")
        return stats | self.timer.summary()

    def summary(self, history: list[dict]) -> list[str]:
        return [first_last(history, "train/pair_accuracy"), first_last(history, "train/bt_loss")]
