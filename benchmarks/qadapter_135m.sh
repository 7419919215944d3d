#!/usr/bin/env bash
# Q-Adapter vs SFT vs Replay vs DPO on the embedded 135M model (issue 8, Li et al. "Q-Adapter").
#
#   pi_1 = smollm2-135m-instruct (frozen; the model every method starts from)
#   data = the bundled HH-RLHF harmless pairs: train split for every method, validation split held out
#
# Every method sees the same pairs in the same order (seed 0), the same number of steps, the same
# LoRA (r=8, alpha=16, dropout 0.05 on q/k/v/o), AdamW lr 3e-4 constant, prompts cut to their last
# $PROMPT_TOKENS tokens and replies to $REPLY_TOKENS:
#   qadapter  Q-Adapter (configs/qadapter.yaml: alpha=1, alpha0=0.01, beta=0.1, gamma=1), $PAIRS pairs/step
#   sft       SFT on the chosen replies of those pairs ($PAIRS replies/step)
#   replay    the same SFT batch plus as many of pi_1's own greedy answers to the first $REPLAYED
#             neutral prompts (trainer replay: batch 2*$PAIRS, replay_fraction 0.5)
#   dpo       DPO from pi_1 (beta 0.1), $PAIRS pairs/step
# then `rlcustom eval qadapter` scores each (and pi_1 itself) on $EVAL_PAIRS held-out pairs:
# accuracy by the method's implicit reward (Q-Adapter: summed residual rewards of Eq. 9; SFT/Replay/DPO:
# the DPO implicit reward sum log pi - log pi_1; pi_1: log pi_1 summed and per token) and forgetting
# (NLL of pi_1's greedy answers to the neutral prompts the Replay run did not see, minus pi_1's).
# Writes runs/qadapter-135m/<method>/eval.json and benchmarks/results/qadapter_135m.json; prints a table.
#
#   bash benchmarks/qadapter_135m.sh                         # everything, one stage after another
#   STAGES="qadapter sft" bash benchmarks/qadapter_135m.sh   # a subset (train + eval of those methods);
#   STAGES="table" bash benchmarks/qadapter_135m.sh          # only collect the eval JSONs into the table
# Stages: qadapter sft replay dpo base table. A finished training (model/ or adapter/ present) is not rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
RLC=${RLC:-.venv/bin/rlcustom}
OUT=${OUT:-runs/qadapter-135m}
STAGES=${STAGES:-"qadapter sft replay dpo base table"}
STEPS=${STEPS:-60}                 # optimizer steps, every method
PAIRS=${PAIRS:-4}                  # preference pairs (or chosen replies) per step
PROMPT_TOKENS=${PROMPT_TOKENS:-64}
REPLY_TOKENS=${REPLY_TOKENS:-48}
REPLAYED=${REPLAYED:-8}            # neutral prompts whose pi_1 answers Replay trains on (forgetting uses the rest)
EVAL_PAIRS=${EVAL_PAIRS:-200}      # held-out validation pairs (224 exist)
THREADS=${THREADS:-1}              # torch threads per actor (2 shared cores: 1 each for two jobs)
export OMP_NUM_THREADS=$THREADS

LENS="data.max_prompt_tokens=$PROMPT_TOKENS algo.max_completion_tokens=$REPLY_TOKENS"
RUN="steps=$STEPS save_every=$STEPS tracking.mode=offline resume=auto roles.learner.num_threads=$THREADS"
LORA="model.lora.r=8 model.lora.alpha=16 optim.lr=3e-4 optim.warmup_steps=0 optim.schedule=constant"
# SFT and Replay reuse the pipeline's SFT config with the LoRA and the single-CPU learner of the others
SFT_CFG="configs/pipeline/1-sft.yaml $LORA optim.micro_batch_size=8 roles.learner.zero_stage=0 roles.learner.cpus=1"
EVAL="configs/qadapter.yaml $LENS --pairs $EVAL_PAIRS --replayed $REPLAYED --new-tokens $REPLY_TOKENS \
      --original $OUT/original_task.jsonl"
has() { [[ " $STAGES " == *" $1 "* ]]; }

if has qadapter; then
  [[ -f $OUT/qadapter/adapter/adapter_config.json ]] || \
  $RLC train configs/qadapter.yaml output_dir=$OUT/qadapter algo.pairs_per_step=$PAIRS $LENS $RUN \
      roles.reference.num_threads=$THREADS
  $RLC eval qadapter $EVAL output_dir=$OUT/qadapter --adapter $OUT/qadapter/adapter --out $OUT/qadapter/eval.json
fi
if has sft; then
  [[ -f $OUT/sft/model/config.json ]] || \
  $RLC train $SFT_CFG output_dir=$OUT/sft algo.batch_size=$PAIRS $LENS $RUN
  $RLC eval qadapter $EVAL output_dir=$OUT/sft --policy $OUT/sft/model --out $OUT/sft/eval.json
fi
if has replay; then
  [[ -f $OUT/replay/model/config.json ]] || \
  $RLC train $SFT_CFG trainer=replay output_dir=$OUT/replay algo.batch_size=$((2 * PAIRS)) \
      algo.replay_fraction=0.5 algo.replay_examples=$REPLAYED algo.replay_max_new_tokens=$REPLY_TOKENS $LENS $RUN
  $RLC eval qadapter $EVAL output_dir=$OUT/replay --policy $OUT/replay/model --out $OUT/replay/eval.json
fi
if has dpo; then
  [[ -f $OUT/dpo/model/config.json ]] || \
  $RLC train configs/dpo.yaml output_dir=$OUT/dpo algo.pairs_per_step=$PAIRS algo.beta=0.1 optim.lr=3e-4 \
      $LENS $RUN roles.reference.num_threads=$THREADS
  $RLC eval qadapter $EVAL output_dir=$OUT/dpo --policy $OUT/dpo/model --out $OUT/dpo/eval.json
fi
if has base; then  # pi_1 itself: the "before" row
  $RLC eval qadapter $EVAL output_dir=$OUT/base --out $OUT/base/eval.json
fi
if has table; then
  .venv/bin/python -m benchmarks.qadapter_135m_table --runs $OUT --out benchmarks/results/qadapter_135m.json \
      --command "bash benchmarks/qadapter_135m.sh" --settings "STEPS=$STEPS PAIRS=$PAIRS PROMPT_TOKENS=$PROMPT_TOKENS \
REPLY_TOKENS=$REPLY_TOKENS REPLAYED=$REPLAYED EVAL_PAIRS=$EVAL_PAIRS THREADS=$THREADS"
fi
