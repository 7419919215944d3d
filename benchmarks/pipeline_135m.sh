#!/usr/bin/env bash
# SFT -> reward model -> PPO on the embedded 135M model and HH-RLHF, at a budget that fits
# 2 CPU cores (~25 min): the configs in configs/pipeline/ with fewer steps and shorter texts.
# Writes runs/pipeline-135m/*/eval*.json and prints the numbers quoted in the README.
set -euo pipefail
cd "$(dirname "$0")/.."
RLC=${RLC:-.venv/bin/rlcustom}
OUT=${OUT:-runs/pipeline-135m}
SHORT="data.max_prompt_tokens=96 tracking.mode=offline resume=never"
$RLC train configs/pipeline/1-sft.yaml output_dir=$OUT/sft steps=30 algo.batch_size=8 \
    algo.max_completion_tokens=64 optim.total_steps=30 optim.warmup_steps=3 optim.lr=2e-5 \
    roles.learner.num_threads=2 $SHORT
$RLC train configs/pipeline/2-reward.yaml output_dir=$OUT/reward model.path=$OUT/sft/model steps=40 \
    algo.pairs_per_step=8 algo.max_completion_tokens=64 optim.lr=2e-5 roles.learner.num_threads=2 $SHORT
$RLC eval configs/pipeline/2-reward.yaml output_dir=$OUT/reward --policy $OUT/reward/model \
    --reference $OUT/sft/model --metrics pairs --pairs 128 --out $OUT/reward/eval_pairs.json
$RLC eval configs/pipeline/3-ppo.yaml output_dir=$OUT/ppo model.path=$OUT/sft/model reward.model_path=$OUT/reward/model \
    --policy $OUT/sft/model --reference $OUT/sft/model --metrics reward,kl --limit 32 \
    sampling.max_new_tokens=48 --out $OUT/ppo/eval_before.json
$RLC train configs/pipeline/3-ppo.yaml output_dir=$OUT/ppo model.path=$OUT/sft/model \
    reward.model_path=$OUT/reward/model steps=10 algo.prompts_per_step=4 sampling.n=4 \
    sampling.max_new_tokens=48 algo.advantage=rloo optim.lr=5e-4 roles.rollout.num_threads=2 \
    roles.learner.num_threads=2 $SHORT
$RLC eval configs/pipeline/3-ppo.yaml output_dir=$OUT/ppo model.path=$OUT/sft/model reward.model_path=$OUT/reward/model \
    --policy $OUT/ppo/model --reference $OUT/sft/model --metrics reward,kl --limit 32 \
    sampling.max_new_tokens=48 --out $OUT/ppo/eval_after.json
