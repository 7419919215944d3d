"""Q-Adapter (residual Q-learning from preferences on a frozen LLM) and its Replay baseline.

* ``qadapter``: the learner is the frozen pre-trained model ``pi_1`` plus a LoRA adapter
  (``model.lora``: r=8, alpha=16, dropout 0.05 in the paper); the adapted model's logits are
  ``Q_theta(s, .)``. Each step takes ``pairs_per_step`` preference pairs (interleaved rows
  chosen, rejected, as ``dpo``) and runs the learner objective ``qadapter``
  (:mod:`rlcustom.objectives.qadapter`): residual rewards (Eq. 9) and the
  Bradley-Terry + L2 loss (Eq. 10). At the last step the adapter is written with the
  learner's ``save_adapter`` to ``OUTPUT_DIR/adapter``: the customised policy is the base
  plus this adapter decoded with ``decoder=qadapter`` (Eq. 4), see
  :func:`rlcustom.decoding.qadapter.qadapter_decoder`. (``OUTPUT_DIR/model``, which the
  base trainer always exports, is the adapter MERGED into the base, i.e. ``Q_theta`` as a
  plain LM: not the customised policy.)

  Cost of a step: ``log pi_1`` over the whole vocabulary is needed at every response
  position, which is too big to cache or ship (V floats per token). The default
  (``algo.base_forward: cached``) caches ``pi_1``'s final hidden states instead (H floats
  per token, e.g. 576 vs 49152): the reference actor computes them once per dataset row,
  one step ahead of the learner (its forward overlaps the learner's step when they sit
  on different devices), and the learner gets ``log pi_1 = log_softmax(lm_head(h))``
  for one matrix product, so a learner step costs one forward/backward of the adapted
  model plus the head. ``separate`` takes ``log pi_1`` from the same model with the
  adapter disabled, in a forward under ``torch.no_grad()``. Measured by
  ``rlcustom bench qadapter_step`` (SmolLM2-135M, r=8 LoRA on q/k/v/o, 8 rows of 64 + 64
  tokens, one thread, CPU time, 2026-11-23): ``cached`` 1.09x the ``sft`` forward/backward,
  ``separate`` 1.40x; the cache costs 0.31x once per row, on the reference actor. Measured (CPU, 1 thread,
  process time, r=8 LoRA on q/k/v/o, train mode, 8 rows of 64 prompt + 64 reply tokens,
  min of 2-3 repeats, two runs, before ``cached`` existed): SmolLM2-135M: the ``separate`` step costs 1.39-1.48x the
  ``sft`` forward/backward of the adapted model on the same batch; with ``log pi_1``
  given in the batch (``base_logprobs``) it costs 0.94x, so the whole extra is the
  no-grad base forward (the reward maths costs no more than SFT's NLL). The
  one-batched-forward alternative (``base_forward: paired``, base and adapted rows in one
  ``2B``-row forward as ``PairedLoRAStep`` decodes) costs 1.81-1.90x, because the backward
  then also runs over the base rows. Tiny test model (vocabulary-dominated): 1.88x vs 2.29x.

* ``replay`` (the paper's Replay baseline, Appendix B.3): SFT on the chosen replies mixed
  with "original-task" examples, ``pi_1``'s own greedy answers to neutral prompts,
  generated once at build time with the ``hf`` engine and cached as
  ``OUTPUT_DIR/replay.jsonl`` (:func:`rlcustom.data.original_task.original_task_examples`).

The other baselines are existing trainers on the same ``data.prompts`` pairs: ``sft``
(``load_sft`` takes each HH pair's chosen reply) and ``dpo`` (reference = ``pi_1``).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from rlcustom.config import non_negative, positive, register_section, unit_interval
from rlcustom.errors import ConfigError
from rlcustom.trainers.base import register_trainer
from rlcustom.trainers.offline import DatasetTrainer, encode_pairs
from rlcustom.trainers.roles import build_learner, build_reference, first_last

if TYPE_CHECKING:
    import torch


def _check_even_micro_batch(trainer) -> None:
    if trainer.cfg.optim.micro_batch_size % 2:
        raise ConfigError(f"{trainer.name}: optim.micro_batch_size must be even (rows are chosen/rejected pairs "
                          f"and a micro-batch must keep pairs whole); got {trainer.cfg.optim.micro_batch_size}")


@register_section("qadapter")
@dataclass(frozen=True)
class QAdapterConfig:
    pairs_per_step: int = field(default=8, metadata=positive)  # preference pairs per optimizer step
    alpha: float = field(default=1.0, metadata=positive)  # alpha~, entropy weight of the customised policy (Table 3)
    alpha0: float = field(default=0.01, metadata=non_negative)  # lambda * alpha_1: weight of log pi_1 (Table 3)
    beta: float = field(default=0.1, metadata=non_negative)  # L2 penalty on the residual rewards (Eq. 10)
    gamma: float = field(default=1.0, metadata=unit_interval)  # discount (Table 3: 1.0)
    length_normalize: bool = False  # mean instead of sum of rewards per reply (not in the paper)
    bt_scale: Literal["paper", "official"] = "paper"  # BT logit (R_w-R_l)/tau: paper tau=1 (Eq. 10); official: L-1
    base_forward: Literal["cached", "separate", "paired"] = "cached"  # how log pi_1 is computed (see the objective)
    cache_dtype: Literal["float32", "bfloat16"] = "float32"  # cached pi_1 hidden states (bfloat16 halves memory)
    max_completion_tokens: int = field(default=256, metadata=positive)  # most reply tokens per example, EOS included


@register_trainer("qadapter")
class QAdapterTrainer(DatasetTrainer):
    """Q-Adapter (Algorithm 1): sample preference pairs, update ``Q_theta`` by Eq. 10."""

    @property
    def roles_used(self):  # type: ignore[override]
        return ("learner", "reference") if self.cfg.algo.base_forward == "cached" else ("learner",)

    def build(self) -> None:
        from rlcustom.data.loaders import load_preference_pairs

        if self.cfg.model.lora is None:
            raise ConfigError("qadapter: set model.lora (the adapter is Q_theta; the frozen base is pi_1)")
        _check_even_micro_batch(self)
        replicas = self.role_cfg("learner").replicas
        if self.cfg.algo.pairs_per_step % replicas:
            raise ConfigError(f"qadapter: algo.pairs_per_step ({self.cfg.algo.pairs_per_step}) must be a multiple of "
                              f"roles.learner.replicas ({replicas}) so that every rank gets whole pairs")
        d = self.cfg.data
        build_learner(self)
        self.load_rows(list(load_preference_pairs(d.prompts, split=d.split, val_fraction=d.val_fraction,
                                                  seed=d.split_seed, on_bad_record=d.on_bad_record, limit=d.limit)))
        for i, r in enumerate(self.rows):
            r["_row"] = i
        if self.cfg.algo.base_forward == "cached":
            build_reference(self)
            self.base_cache: dict[int, list] = {}  # row -> [chosen, rejected] hidden states [T_i, H]
            self._ahead = None  # (rows, future) of the next step's uncached rows

    def pair_batch(self, rows: list[dict]) -> dict:
        prompts = [r["prompt_text"] for r in rows for _ in (0, 1)]
        answers = [x for r in rows for x in (r["chosen"], r["rejected"])]  # interleaved: chosen, rejected
        return encode_pairs(self.tok, prompts, answers, self.cfg.data.max_prompt_tokens,
                            self.cfg.algo.max_completion_tokens).padded(self.tok.pad_token_id)

    def _request_hidden(self, rows: list[dict]):
        todo = [r for r in rows if r["_row"] not in self.base_cache]
        if not todo:
            return None
        return todo, self.groups["reference"].scatter("response_hidden", self.pair_batch(todo), self.cfg.algo.cache_dtype)

    def _collect_hidden(self, pending) -> None:
        if pending is not None:
            todo, refs = pending
            hs = self.groups["reference"].gather(refs, "reference.response_hidden")
            for j, r in enumerate(todo):
                self.base_cache[r["_row"]] = [hs[2 * j], hs[2 * j + 1]]

    def base_hidden(self, rows: list[dict], batch: dict) -> "torch.Tensor":
        """[B, T, H] cached final hidden states of ``pi_1`` for the batch's rows (missing ones computed
        now); the next step's rows are requested before returning, so they compute during this step."""
        import torch

        ahead, self._ahead = self._ahead, None
        self._collect_hidden(ahead)
        self._collect_hidden(self._request_hidden(rows))  # rows the look-ahead did not cover (first step, resume)
        if self.step_idx + 1 < self.cfg.steps:
            self._ahead = self._request_hidden(self.next_rows_at(self.step_idx + 1, len(rows)))
        hs = [h for r in rows for h in self.base_cache[r["_row"]]]
        B, T = batch["response_mask"].shape
        out = torch.zeros((B, T, hs[0].shape[-1]), dtype=hs[0].dtype)
        for i, h in enumerate(hs):
            out[i, : h.shape[0]] = h
        return out

    def step(self) -> dict[str, float]:
        a = self.cfg.algo
        rows = self.next_rows(a.pairs_per_step)
        batch = self.pair_batch(rows)
        if a.base_forward == "cached":
            with self.timer("reference"):
                batch["base_hidden"] = self.base_hidden(rows, batch)
        with self.timer("train"):
            stats = self.learner_train(batch, "qadapter", alpha=a.alpha, alpha0=a.alpha0, beta=a.beta, gamma=a.gamma,
                                       length_normalize=a.length_normalize, base_forward=a.base_forward,
                                       bt_scale=a.bt_scale)
        if self.step_idx + 1 >= self.cfg.steps:  # the last step: the adapter is the product
            self.save_adapter()
        return stats | self.timer.summary()

    @property
    def adapter_dir(self):
        return self.out_dir / "adapter"

    def save_adapter(self) -> str:
        lg = self.groups["learner"]
        actors = lg.actors if self.role_cfg("learner").zero_stage == 3 else lg.actors[:1]  # ZeRO-3: a collective
        path = str(self.adapter_dir)
        lg.get([x.save_adapter.remote(path) for x in actors], "save adapter")
        self.event(f"Q-Adapter written to {path} (decode with decoder=qadapter, "
                   f"alpha={self.cfg.algo.alpha}, alpha0={self.cfg.algo.alpha0})")
        return path

    def summary(self, history: list[dict]) -> list[str]:
        return [first_last(history, "train/reward_accuracy"), first_last(history, "train/qadapter_loss"),
                f"adapter: {self.adapter_dir}"]


@register_section("replay")
@dataclass(frozen=True)
class ReplayConfig:
    batch_size: int = field(default=8, metadata=positive)  # examples per optimizer step (new + replayed)
    replay_fraction: float = field(default=0.5, metadata=unit_interval)  # share of each batch from replay data
    replay_prompts: str | None = None  # prompts file for the original task; null: built-in neutral prompts
    replay_examples: int = field(default=16, metadata=positive)  # at most this many replay prompts
    replay_max_new_tokens: int = field(default=64, metadata=positive)  # length of pi_1's greedy answers
    max_completion_tokens: int = field(default=256, metadata=positive)  # most reply tokens per example, EOS included


@register_trainer("replay")
class ReplayTrainer(DatasetTrainer):
    """SFT on the chosen replies mixed with ``pi_1``'s own answers to neutral prompts (Replay)."""

    roles_used = ("learner",)

    def build(self) -> None:
        from rlcustom.data.loaders import load_prompts, load_sft
        from rlcustom.data.original_task import NEUTRAL_PROMPTS, original_task_examples

        d, a = self.cfg.data, self.cfg.algo
        build_learner(self)
        self.load_rows(list(load_sft(d.prompts, split=d.split, val_fraction=d.val_fraction, seed=d.split_seed,
                                     on_bad_record=d.on_bad_record, limit=d.limit)))
        if a.replay_prompts is None:
            prompts = list(NEUTRAL_PROMPTS[: a.replay_examples])
        else:
            prompts = [r["messages"] for r in load_prompts(a.replay_prompts, split="all", seed=d.split_seed,
                                                           on_bad_record=d.on_bad_record, limit=a.replay_examples)]
        self.replay = original_task_examples(self.cfg.model.path, self.tok, prompts,
                                             max_new_tokens=a.replay_max_new_tokens, chat_template=d.chat_template,
                                             cache=self.replay_file, dtype=self.cfg.model.dtype)
        self.event(f"replay: {len(self.replay)} original-task examples in {self.replay_file}")

    @property
    def replay_file(self):
        return self.out_dir / "replay.jsonl"

    def next_replay(self, n: int) -> list[dict]:
        """``n`` replay examples in a seeded epoch order; position = step * n (resume is exact)."""
        out, epoch_len = [], len(self.replay)
        for j in range(self.step_idx * n, self.step_idx * n + n):
            epoch, pos = divmod(j, epoch_len)
            order = list(range(epoch_len))
            random.Random(self.cfg.seed * 1000 + 7 + epoch).shuffle(order)
            out.append(self.replay[order[pos]])
        return out

    def step(self) -> dict[str, float]:
        a = self.cfg.algo
        n_replay = min(a.batch_size, round(a.batch_size * a.replay_fraction))
        new = self.next_rows(a.batch_size - n_replay) if a.batch_size > n_replay else []
        old = self.next_replay(n_replay) if n_replay else []
        prompts = [r["prompt_text"] for r in new] + [r["prompt"] for r in old]
        completions = [r["completion"] for r in new] + [r["completion"] for r in old]
        ro = encode_pairs(self.tok, prompts, completions, self.cfg.data.max_prompt_tokens, a.max_completion_tokens)
        with self.timer("train"):
            stats = self.learner_train(ro.padded(self.tok.pad_token_id), "sft")
        return stats | {"train/replay_rows": float(len(old))} | self.timer.summary()

    def summary(self, history: list[dict]) -> list[str]:
        return [first_last(history, "train/nll"), f"replay data: {self.replay_file}"]
