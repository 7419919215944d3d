#!/usr/bin/env bash
# SFT -> reward model -> PPO on the embedded 135M model and HH-RLHF (harmless-base) at a budget
# that fits 2 CPU cores: the configs in configs/pipeline/ with fewer steps and shorter texts.
#   stage 1: 30 SFT steps x 8 chosen replies (LoRA-free, full model)
#   stage 2: a Bradley-Terry reward model whose backbone is the first 8 of the instruct model's 30
#            layers (algo.backbone_layers=8: ~4x cheaper per step), 150 steps x 16 pairs (~1.2 epochs),
#            prompts cut to their last 64 tokens, replies to 48
#   stage 3: PPO (LoRA, RLOO baseline) from the SFT model against that reward model
# Writes runs/pipeline-135m/*/eval*.json and prints the numbers quoted in the README.
# STAGES="1 2 3" (default) or a subset, e.g. STAGES="3" to rerun PPO only.
set -euo pipefail
cd "$(dirname "$0")/.."
RLC=${RLC:-.venv/bin/rlcustom}
OUT=${OUT:-runs/pipeline-135m}
STAGES=${STAGES:-"1 2 3"}
SHORT="tracking.mode=offline resume=never"
if [[ " $STAGES " == *" 1 "* ]]; then
  $RLC train configs/pipeline/1-sft.yaml output_dir=$OUT/sft steps=30 algo.batch_size=8 \
      algo.max_completion_tokens=64 optim.total_steps=30 optim.warmup_steps=3 optim.lr=2e-5 \
      data.max_prompt_tokens=96 roles.learner.num_threads=2 $SHORT
fi
if [[ " $STAGES " == *" 2 "* ]]; then
  $RLC train configs/pipeline/2-reward.yaml output_dir=$OUT/reward model.path=smollm2-135m-instruct \
      algo.backbone_layers=8 steps=150 save_every=50 algo.pairs_per_step=16 algo.max_completion_tokens=48 \
      data.max_prompt_tokens=64 optim.lr=5e-5 optim.warmup_steps=10 optim.schedule=cosine optim.total_steps=150 \
      optim.micro_batch_size=32 roles.learner.num_threads=2 $SHORT
  $RLC eval configs/pipeline/2-reward.yaml output_dir=$OUT/reward model.path=smollm2-135m-instruct \
      --policy $OUT/reward/model --metrics pairs --pairs 200 --out $OUT/reward/eval_pairs.json
fi
if [[ " $STAGES " == *" 3 "* ]]; then
  PPO="model.path=$OUT/sft/model reward.model_path=$OUT/reward/model sampling.max_new_tokens=48 data.max_prompt_tokens=96"
  $RLC eval configs/pipeline/3-ppo.yaml output_dir=$OUT/ppo $PPO --policy $OUT/sft/model \
      --reference $OUT/sft/model --metrics reward,kl --limit 32 --out $OUT/ppo/eval_before.json
  $RLC train configs/pipeline/3-ppo.yaml output_dir=$OUT/ppo $PPO steps=12 algo.prompts_per_step=4 sampling.n=4 \
      algo.advantage=rloo optim.lr=5e-4 roles.rollout.num_threads=2 roles.learner.num_threads=2 $SHORT
  $RLC eval configs/pipeline/3-ppo.yaml output_dir=$OUT/ppo $PPO --policy $OUT/ppo/model \
      --reference $OUT/sft/model --metrics reward,kl --limit 32 --out $OUT/ppo/eval_after.json
fi
