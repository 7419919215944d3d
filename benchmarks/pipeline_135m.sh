#!/usr/bin/env bash
# SFT -> reward model -> PPO on the embedded 135M model and HH-RLHF (harmless-base) at a budget
# that fits 2 CPU cores: the configs in configs/pipeline/ with fewer steps and shorter texts.
#   stage 1: 30 SFT steps x 8 chosen replies (LoRA-free, full model)
#   stage 2: a Bradley-Terry head on the frozen SFT backbone (benchmarks/rm_probe_135m.py): features
#            of 8 layers computed once for $RM_PAIRS training pairs (prompts cut to their last 64
#            tokens, replies to 48), one logistic regression per layer with its L2 chosen by 5-fold
#            cross-validation; the layer with the best cross-validated accuracy is exported as a
#            RewardModel (backbone cut to that layer + head) and scored on 200 held-out pairs.
#   stage 2t: the fine-tuned alternative (rlcustom train): the first 8 of the instruct model's 30 layers
#            (algo.backbone_layers=8), 150 steps x 16 pairs; held-out 0.495 (memorises), so not the default
#   stage 3: PPO (LoRA, RLOO baseline) from the SFT model against the stage-2 reward model
# Writes runs/pipeline-135m/*/eval*.json and prints the numbers quoted in the README.
# STAGES="1 2 3" (default) or a subset, e.g. STAGES="3" to rerun PPO only.
# THREADS=1 (default): torch threads per actor (roles.*.num_threads); 2 on an otherwise idle 2-core box.
set -euo pipefail
cd "$(dirname "$0")/.."
RLC=${RLC:-.venv/bin/rlcustom}
OUT=${OUT:-runs/pipeline-135m}
STAGES=${STAGES:-"1 2 3"}
THREADS=${THREADS:-1}
RM_PAIRS=${RM_PAIRS:-1024}    # training pairs for the stage-2 probe (2,088 in the split; the forward pass is the cost)
PPO_STEPS=${PPO_STEPS:-8}
RM_DIR=${RM_DIR:-$OUT/reward-probe/model}  # the reward model stage 3 optimises (stage 2t writes $OUT/reward/model)
SHORT="tracking.mode=offline resume=never"
t() { local s=$SECONDS; "$@"; echo "[pipeline] $((SECONDS - s)) s: ${*:1:3}"; }  # wall time per command
if [[ " $STAGES " == *" 1 "* ]]; then
  t $RLC train configs/pipeline/1-sft.yaml output_dir=$OUT/sft steps=30 algo.batch_size=8 \
      algo.max_completion_tokens=64 optim.total_steps=30 optim.warmup_steps=3 optim.lr=2e-5 \
      data.max_prompt_tokens=96 roles.learner.num_threads=$THREADS $SHORT
fi
if [[ " $STAGES " == *" 2 "* ]]; then
  t env OMP_NUM_THREADS=$THREADS .venv/bin/python -m benchmarks.rm_probe_135m --model $OUT/sft/model --out $OUT/rm_probe \
      --train-pairs $RM_PAIRS --max-prompt 64 --max-reply 48 --export-layer best --export-dir $OUT/reward-probe/model
  t $RLC eval configs/pipeline/2-reward.yaml output_dir=$OUT/reward-probe model.path=$OUT/sft/model \
      --policy $OUT/reward-probe/model --metrics pairs --pairs 200 --out $OUT/reward-probe/eval_pairs.json
fi
if [[ " $STAGES " == *" 2t "* ]]; then
  t $RLC train configs/pipeline/2-reward.yaml output_dir=$OUT/reward model.path=smollm2-135m-instruct \
      algo.backbone_layers=8 steps=150 save_every=50 algo.pairs_per_step=16 algo.max_completion_tokens=48 \
      data.max_prompt_tokens=64 optim.lr=5e-5 optim.warmup_steps=10 optim.schedule=cosine optim.total_steps=150 \
      optim.micro_batch_size=32 roles.learner.num_threads=$THREADS $SHORT
  t $RLC eval configs/pipeline/2-reward.yaml output_dir=$OUT/reward model.path=smollm2-135m-instruct \
      --policy $OUT/reward/model --metrics pairs --pairs 200 --out $OUT/reward/eval_pairs.json
fi
if [[ " $STAGES " == *" 3 "* ]]; then
  PPO="model.path=$OUT/sft/model reward.model_path=$RM_DIR sampling.max_new_tokens=48 data.max_prompt_tokens=96"
  t $RLC eval configs/pipeline/3-ppo.yaml output_dir=$OUT/ppo $PPO --policy $OUT/sft/model \
      --reference $OUT/sft/model --metrics reward,kl --limit 32 --out $OUT/ppo/eval_before.json
  t $RLC train configs/pipeline/3-ppo.yaml output_dir=$OUT/ppo $PPO steps=$PPO_STEPS algo.prompts_per_step=4 sampling.n=4 \
      algo.advantage=rloo optim.lr=5e-4 roles.rollout.num_threads=$THREADS roles.learner.num_threads=$THREADS \
      roles.reference.num_threads=$THREADS roles.reward.num_threads=$THREADS $SHORT
  t $RLC eval configs/pipeline/3-ppo.yaml output_dir=$OUT/ppo $PPO --policy $OUT/ppo/model \
      --reference $OUT/sft/model --metrics reward,kl --limit 32 --out $OUT/ppo/eval_after.json
fi
