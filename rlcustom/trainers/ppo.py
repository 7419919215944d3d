"""PPO with a learned critic (Schulman et al. 2017; Ouyang et al. 2022 for the RLHF set-up).

KL to the reference is a per-token reward penalty (``kl_mode: reward``,
Ziegler et al. 2019) or a loss term (``kl_mode: loss``, as in GRPO). With
``advantage: grpo`` or ``rloo`` there is no critic (group baselines). GAE's critic
is a value model of its own (``critic: separate``) or a value head on the policy's
backbone trained in the same forward/backward (``critic: shared``, the default for
LoRA; :mod:`rlcustom.objectives.shared_critic`); a LoRA learner also serves the
reference with its adapter disabled (``roles.reference.share``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from rlcustom.config import non_negative, positive, register_section, unit_interval
from rlcustom.trainers.base import register_trainer
from rlcustom.trainers.overlap import OffPolicyConfig
from rlcustom.trainers.pipeline import PipelineTrainer, Step
from rlcustom.trainers.roles import build_learner, build_reference, build_reward, build_rollout, build_value, first_last


@register_section("ppo")
@dataclass(frozen=True)
class PPOConfig(OffPolicyConfig):
    prompts_per_step: int = field(default=8, metadata=positive)  # prompts per step (x sampling.n samples)
    ppo_epochs: int = field(default=1, metadata=positive)  # optimisation passes over each batch
    clip_eps: float = field(default=0.2, metadata=positive)  # policy ratio clip
    value_clip_eps: float = field(default=0.2, metadata=positive)  # critic clip around old values
    gamma: float = field(default=1.0, metadata=unit_interval)  # discount of the per-token returns
    lam: float = field(default=0.95, metadata=unit_interval)  # GAE lambda
    advantage: str = "gae"  # gae (critic) | grpo | rloo | reinforce | any registered estimator
    # Normalise advantages over the batch. None = on for GAE, off for group estimators (grpo/rloo/reinforce):
    # re-centring group baselines over the batch gives a group whose answers all scored the same non-zero
    # advantages (a length-biased gradient from prompts with no signal); no peer whitens them by default.
    whiten_advantages: bool | None = None  # null: on for gae, off for group estimators (see above)
    kl_coef: float = field(default=0.05, metadata=non_negative)  # initial KL coefficient beta
    kl_target: float | None = None  # set for the adaptive controller (Ziegler et al. 2019)
    kl_horizon: int = field(default=10000, metadata=positive)  # adaptive KL gain = samples / kl_horizon per update
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"  # per-token KL estimator (Schulman 2020)
    kl_mode: Literal["reward", "loss"] = "reward"  # KL as a per-token reward penalty or a loss term (GRPO)
    entropy_coef: float = field(default=0.0, metadata=non_negative)  # weight of the entropy bonus in the loss
    agg: Literal["token", "seq", "seq_sum"] = "token"  # loss aggregation
    # GAE's critic: shared = a value head on the policy's backbone (one forward and one backward for policy and
    # value, no critic model); separate = a value model of its own (the critic role); auto: shared with model.lora
    critic: Literal["auto", "shared", "separate"] = "auto"  # GAE's critic: value head on the policy, or its own model
    vf_coef: float = field(default=0.5, metadata=positive)  # shared critic: weight of the value loss in the joint loss
    critic_lr: float | None = None  # default: optim.lr
    critic_layers: int | None = None  # a smaller critic: the first N layers of the policy
    recompute_logprobs: bool = True  # behaviour log-probs from the learner (exact) instead of the engine
    # ppo | dapo | gspo | dr_grpo | reinforce_pp | dual_clip (rlcustom.trainers.objective_plan)
    objective: str = "ppo"  # the policy loss: ppo | dapo | gspo | dr_grpo | reinforce_pp | dual_clip
    objective_kwargs: dict[str, Any] = field(default_factory=dict)  # clip_eps_high, dual_clip_c, dynamic_sampling, ...


@register_trainer("ppo")
class PPOTrainer(PipelineTrainer):
    """One step: generate -> score (reward, reference, critic) -> GAE -> PPO update -> sync."""

    reference_shareable = True  # the reference is the initial policy: a LoRA learner serves it (roles.reference.share)

    @property
    def uses_critic(self) -> bool:
        a = self.cfg.algo
        return a.advantage == "gae" and a.objective in ("ppo", "dual_clip")  # the others set their estimator

    @property
    def shared_critic(self) -> bool:
        """GAE's values from a head on the learner (``algo.critic``: shared, or auto with LoRA)."""
        c = self.cfg.algo.critic
        return self.uses_critic and (c == "shared" or (c == "auto" and self.cfg.model.lora is not None))

    @property
    def roles_used(self):  # type: ignore[override]
        separate = self.uses_critic and not self.shared_critic
        return ("rollout", "learner", "reference", "reward") + (("critic",) if separate else ())

    @property
    def stateful_roles(self):  # type: ignore[override]
        return ("learner", "critic")

    def build(self) -> None:
        from rlcustom.algos.kl import AdaptiveKLController, FixedKLController

        a = self.cfg.algo
        self.rollout, self.learner = build_rollout(self), build_learner(self, value_head=self.shared_critic)
        self.reference, self.reward = build_reference(self), build_reward(self)
        if "critic" in self.roles_used:
            build_value(self, "critic", lr=a.critic_lr, num_layers=a.critic_layers)
        from rlcustom.trainers.objective_plan import plan_objective

        self.loss_plan = plan_objective(a.objective, a.objective_kwargs, clip_eps=a.clip_eps, agg=a.agg,
                                   max_new_tokens=self.cfg.sampling.max_new_tokens)
        self.check_off_policy(recomputed=a.recompute_logprobs)
        self.kl_ctl = (AdaptiveKLController(a.kl_coef, a.kl_target, a.kl_horizon) if a.kl_target
                       else FixedKLController(a.kl_coef))

    @property
    def reuses_pi_old(self) -> bool:
        """``pi_old`` from the PPO update's own forward, no learner forward in ``score``: one epoch (one optimizer
        step over the batch, :meth:`~rlcustom.trainers.overlap.RolloutOverlap.pi_old_from_update`), learner
        log-probs asked for (``recompute_logprobs``), and nothing before the update needs them: no KL penalty in
        the reward (``kl_mode: loss``, or a fixed ``kl_coef: 0``) and no shared critic (its values come from that
        forward, and GAE needs them first)."""
        a = self.cfg.algo
        no_reward_kl = a.kl_mode == "loss" or (a.kl_coef == 0 and a.kl_target is None)
        return (a.recompute_logprobs and no_reward_kl and not self.shared_critic
                and self.pi_old_from_update(one_step=a.ppo_epochs == 1))

    # ------------------------------------------------------------------ stages
    def score(self, s: Step) -> None:
        """Reward, reference log-probs, values and behaviour log-probs: at once on separate devices, one after
        another (each with all the threads) when the scorers share one (:func:`sequential_scorers`)."""
        from rlcustom.trainers.filters import resample_step
        from rlcustom.trainers.objective_plan import shape_scores
        from rlcustom.trainers.roles import sequential_scorers
        from rlcustom.trainers.scoring import gather_scores, scatter_scores, settle

        a, critic, plan, g = self.cfg.algo, "critic" in self.groups, self.loss_plan, self.groups
        if a.recompute_logprobs:
            s.pi_old_reused = self.reuses_pi_old
            s.stats["train/pi_old_forward"] = 0.0 if s.pi_old_reused else 1.0
        if plan.dynamic_sampling:  # the reward first: all-equal groups are dropped and refilled (DAPO)
            params = s.params if s.params is not None else self.sampling_params()
            s.ro, s.scores, m = resample_step(self, s.ro, params, plan, a.prompts_per_step)
            s.batch, s.stats = s.ro.padded(self.pad_id), s.stats | m
        batch, seq = s.batch, bool(sequential_scorers(self))
        refs = {}
        if not plan.dynamic_sampling:
            refs["score"] = settle(g["reward"], scatter_scores(self, s.ro), seq)
        refs["ref"] = settle(g["reference"], g["reference"].scatter("logprobs", batch), seq)
        if critic:
            refs["values"] = settle(g["critic"], g["critic"].scatter("values", batch), seq)
        if self.shared_critic:  # log-probs and values from one forward of the learner
            refs["old"] = g["learner"].scatter("logprobs_and_values", batch)
        elif a.recompute_logprobs and not s.pi_old_reused:
            refs["old"] = g["learner"].scatter("forward_logprobs", batch)
        if not plan.dynamic_sampling:  # + reward/<part>, reward/fail/<reason>; DAPO's overlong penalty
            scores, m = gather_scores(self, refs["score"])
            s.scores, s.stats = shape_scores(plan, scores, s.ro, self.cfg.sampling.max_new_tokens), s.stats | m
        s.ref_lp = g["reference"].gather(refs["ref"], "reference")
        s.values = g["critic"].gather(refs["values"], "critic") if critic else None
        if self.shared_critic:
            lv = g["learner"].gather(refs["old"], "learner logprobs and values")
            s.old_lp = lv[..., 0] if a.recompute_logprobs else batch["logprobs"]
            s.values = lv[..., 1]
        elif s.pi_old_reused:
            s.old_lp = None  # the update's own log-probs (pi_old_update_stats)
        else:
            s.old_lp = g["learner"].gather(refs["old"], "learner logprobs") if a.recompute_logprobs else batch["logprobs"]
        s.rows += ["ref_lp", "values", "old_lp"]

    def advantages(self, s: Step) -> None:
        """KL-shaped token rewards (Ziegler et al. 2019), then the configured estimator."""
        from rlcustom.algos.advantages import whiten_advantages
        from rlcustom.algos.kl import get_kl_estimator, kl_penalty_rewards
        from rlcustom.algos.masked import masked_sum
        from rlcustom.registry import ADV_ESTIMATORS

        a, mask = self.cfg.algo, s.batch["response_mask"]
        beta = self.kl_ctl.value if a.kl_mode == "reward" else 0.0
        if s.pi_old_reused:  # beta is 0 (reuses_pi_old): the penalty is 0 whatever pi_old; KL metric after update
            token_rewards = kl_penalty_rewards(s.scores, s.ref_lp, s.ref_lp, mask, beta, estimator=a.kl_estimator)
        else:
            s.kl_tok = get_kl_estimator(a.kl_estimator)(s.old_lp, s.ref_lp) * mask
            token_rewards = kl_penalty_rewards(s.scores, s.old_lp, s.ref_lp, mask, beta, estimator=a.kl_estimator)
        # Sequence estimators see the KL-shaped return sum_t r_t = score - beta * KL (TRL's RLOO, verl's
        # KL-in-reward): passing the raw scores would drop the penalty.
        shaped = masked_sum(token_rewards, mask, dim=-1)
        name = self.loss_plan.advantage or a.advantage
        adv, s.returns = ADV_ESTIMATORS.get(name)(
            token_rewards=token_rewards, values=s.values, mask=mask, scores=shaped,
            group_ids=torch.tensor(s.ro.prompt_index), gamma=a.gamma, lam=a.lam, **self.loss_plan.adv_kwargs)
        if a.whiten_advantages if a.whiten_advantages is not None else name == "gae":
            adv = whiten_advantages(adv, mask)
        if s.pi_old_reused:  # pi_old from the update's own forward; the engine's as behaviour log-probs
            s.batch = self.pi_old_from_update_batch(s) | {"advantages": adv, "ref_logprobs": s.ref_lp}
            return
        if self.off_policy and a.recompute_logprobs:  # the engine's log-probs stay as behaviour (TIS, metrics)
            s.batch |= self.off_policy_batch(s, s.old_lp)
        s.batch |= {"logprobs": s.old_lp, "advantages": adv, "ref_logprobs": s.ref_lp}

    def update(self, s: Step) -> None:
        """``ppo_epochs`` passes of the clipped policy loss, and of the clipped value loss with a critic."""
        a, p = self.cfg.algo, self.loss_plan
        kw = dict(p.loss_kwargs, **self.is_kwargs(), entropy_coef=a.entropy_coef,
                  kl_coef=self.kl_ctl.value if a.kl_mode == "loss" else 0.0, kl_estimator=a.kl_estimator, **({"weighting": p.weighting} if p.weighting else {}))
        for _ in range(a.ppo_epochs):
            if self.shared_critic:  # one forward/backward: L_policy + vf_coef * L_value (policy_value)
                stats = self.learner_train(s.batch | {"returns": s.returns, "old_values": s.values}, "policy_value",
                                           policy=p.loss, vf_coef=a.vf_coef, value_clip_eps=a.value_clip_eps, **kw)
                continue
            stats = self.learner_train(s.batch, p.loss, **kw)
            if "critic" in self.groups:
                stats |= self.learner_train(s.batch | {"returns": s.returns, "old_values": s.values}, "value_clip",
                                            learner="critic", clip_eps=a.value_clip_eps)  # rows split over ranks
        s.stats |= self.pi_old_update_stats(s, stats)  # with pi_old from the update: its log-probs -> s.old_lp
        if s.pi_old_reused:
            from rlcustom.algos.kl import get_kl_estimator

            s.kl_tok = get_kl_estimator(a.kl_estimator)(s.old_lp, s.ref_lp) * s.batch["response_mask"]

    def metrics(self, s: Step) -> dict[str, float]:
        from rlcustom.algos.masked import masked_mean

        ro, scores, mask = s.ro, s.scores, s.batch["response_mask"]
        kl_seq = float((s.kl_tok.sum(1)).mean())
        self.kl_ctl.update(kl_seq, len(ro))
        example = (ro.texts[0].strip().replace("\n", " ")[:160], float(scores[0]))
        self.examples = getattr(self, "examples", None) or [example]  # first step's, then the latest
        self.examples = self.examples[:1] + [example]
        if self.step_idx % self.cfg.tracking.samples_every == 0:
            self.samples = (ro.prompts or [str(p) for p in ro.prompt_ids], ro.texts, scores.tolist())
        return s.stats | {
            "reward/mean": float(scores.mean()), "reward/std": float(scores.std()) if len(scores) > 1 else 0.0,
            "kl/seq_mean": kl_seq, "kl/coef": float(self.kl_ctl.value),
            "rollout/response_len": float(mask.sum(1).mean()),
            "train/advantage_mean": float(masked_mean(s.batch["advantages"], mask)),
        }

    def state_dict(self) -> dict:
        return {"kl_coef": float(self.kl_ctl.value)}

    def load_state_dict(self, state: dict) -> None:
        if "kl_coef" in state:
            self.kl_ctl.value = state["kl_coef"]

    def summary(self, history: list[dict]) -> list[str]:
        lines = [first_last(history, "reward/mean"), first_last(history, "kl/seq_mean")]
        ex = getattr(self, "examples", [])
        if len(ex) == 2:
            lines += [f"first step sample (reward {ex[0][1]:.2f}): {ex[0][0]!r}",
                      f"last step sample  (reward {ex[1][1]:.2f}): {ex[1][0]!r}"]
        return lines
