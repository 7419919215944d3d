#!/usr/bin/env bash
# Q-Adapter vs SFT, Replay and DPO on a preference the 135M model can learn (issue 21, item 4):
# pairs of pi_1's own samples ranked by VADER sentiment (reward vader_sentiment), chosen = the more positive.
#
#   pi_1 = smollm2-135m-instruct (frozen; every method starts from it)
#
# Stages (each skipped when its output exists; a cut training resumes from its last checkpoint):
#   gen     `rlcustom generate` from pi_1 (temperature 1, seed 0), two lanes: TRAIN_SAMPLES replies to each of
#           the first TRAIN_PROMPTS HH-RLHF train prompts; HELD_SAMPLES to each of the first HELD_PROMPTS
#           validation ones, then pi_1's own held-out samples   -> $OUT/gens-train.jsonl, $OUT/gens-validation.jsonl
#           (every generate call keeps --seed 0: its seed also picks the HH train/validation split)
#   pairs   benchmarks/qadapter_pairs.py: a prompt's samples paired two at a time (1-2, 3-4), both scored by
#           vader_sentiment, kept when the scores differ by >= MARGIN, chosen = higher -> $OUT/pairs.jsonl
#           (HH's train prompts are its train split, HH's validation prompts its validation split: same hash)
#   base    `rlcustom eval qadapter` of pi_1 itself (the "before" row; writes the original-task cache)
#   methods every method from pi_1 on the same train pairs in the same order (seed 0), STEPS x PAIRS pairs,
#           the same LoRA (r=8, alpha=16, dropout 0.05), AdamW lr LR constant; JOBS at a time (one thread each):
#             qa-aX        Q-Adapter (alpha 1, beta 0.1, gamma 1), alpha0 = X for X in ALPHA0S, bt_scale paper
#             qa-official-aX  the same at alpha0 = OFFICIAL with bt_scale official (the released code's 1/(L-1))
#             sft          SFT on the chosen replies;  replay: the same + pi_1's greedy answers to neutral
#                          prompts 1-REPLAYED (half of each batch);  dpo: DPO from pi_1 (beta 0.1)
#           then per method: `rlcustom eval qadapter` (held-out preference accuracy by the method's implicit
#           reward + forgetting = NLL increase on pi_1's answers to the neutral prompts Replay never saw)
#           -> $OUT/<m>/eval.json, and `rlcustom generate` on SAMPLE_PROMPTS HH validation prompts (one reply
#           each, same seed; Q-Adapter decodes pi~ with decoder qadapter)       -> $OUT/<m>/samples.jsonl
#   table   benchmarks/qadapter_sentiment_table.py -> benchmarks/results/qadapter_sentiment_135m.json + .png
#
#   bash benchmarks/qadapter_sentiment_135m.sh                        # everything
#   STAGES="gen pairs" bash benchmarks/qadapter_sentiment_135m.sh     # only the data
#   METHODS="qa-a0.01 sft" STAGES=methods bash benchmarks/qadapter_sentiment_135m.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RLC=${RLC:-.venv/bin/rlcustom}
PY=${PY:-.venv/bin/python}
BASE=${BASE:-smollm2-135m-instruct}
OUT=${OUT:-runs/qadapter-sentiment-135m}
STAGES=${STAGES:-"gen pairs base methods table"}
PROMPT_TOKENS=${PROMPT_TOKENS:-48}    # prompts cut to their last N tokens (sampling, training, eval)
NEW=${NEW:-24}                        # reply tokens: sampled, trained on, sampled again for the VADER reward
TRAIN_PROMPTS=${TRAIN_PROMPTS:-2088}  # HH train prompts sampled (2,088 exist)
TRAIN_SAMPLES=${TRAIN_SAMPLES:-2}     # replies per train prompt (TRAIN_SAMPLES/2 candidate pairs each)
HELD_PROMPTS=${HELD_PROMPTS:-224}     # HH validation prompts sampled (224 exist)
HELD_SAMPLES=${HELD_SAMPLES:-4}       # replies per validation prompt (HELD_SAMPLES/2 candidate pairs each)
MARGIN=${MARGIN:-0.3}                 # least VADER difference of a kept pair (compound score in [-1, 1]); 0.3 kept
                                      # 56% of the smoke run's couples: ~1,170 train and ~250 held-out pairs
STEPS=${STEPS:-64}                    # optimizer steps, every method (125: 1,000 pairs each, ~35 min more)
PAIRS=${PAIRS:-8}                     # pairs (or chosen replies) per step: 64 x 8 = 512 of the ~1,170 train pairs
LR=${LR:-3e-4}
ALPHA0S=${ALPHA0S:-"0.01 0.1 1"}      # Q-Adapter alpha0 sweep (bt_scale paper)
OFFICIAL=${OFFICIAL:-0.01}            # alpha0 of the bt_scale official run ("" skips it)
REPLAYED=${REPLAYED:-8}               # neutral prompts Replay trains on (forgetting uses the other 8)
EVAL_PAIRS=${EVAL_PAIRS:-250}         # held-out pairs scored per method (at most what the pairs stage kept)
SAMPLE_PROMPTS=${SAMPLE_PROMPTS:-112} # held-out prompts whose sampled reply VADER scores, per method
JOBS=${JOBS:-2}                       # methods trained/evaluated at once (one torch thread each)
RESULT=${RESULT:-benchmarks/results/qadapter_sentiment_135m.json}
export OMP_NUM_THREADS=1
if [[ -z ${METHODS:-} ]]; then
  METHODS=""
  for a in $ALPHA0S; do METHODS+=" qa-a$a"; done
  [[ -n $OFFICIAL ]] && METHODS+=" qa-official-a$OFFICIAL"
  METHODS+=" sft replay dpo"
fi
SIZES="PROMPT_TOKENS=$PROMPT_TOKENS NEW=$NEW TRAIN_PROMPTS=$TRAIN_PROMPTS TRAIN_SAMPLES=$TRAIN_SAMPLES \
HELD_PROMPTS=$HELD_PROMPTS HELD_SAMPLES=$HELD_SAMPLES MARGIN=$MARGIN STEPS=$STEPS PAIRS=$PAIRS LR=$LR ALPHA0S='$ALPHA0S' OFFICIAL=$OFFICIAL \
REPLAYED=$REPLAYED EVAL_PAIRS=$EVAL_PAIRS SAMPLE_PROMPTS=$SAMPLE_PROMPTS"
has() { [[ " $STAGES " == *" $1 "* ]]; }
log() { echo "==> $(date -u +%H:%M:%S) $*"; }
mkdir -p "$OUT"

PAIRS_FILE=$OUT/pairs.jsonl
LENS="data.max_prompt_tokens=$PROMPT_TOKENS algo.max_completion_tokens=$NEW"
COMMON="model.path=$BASE data.prompts=$PAIRS_FILE $LENS tracking.mode=offline cluster.backend=inprocess"
RUN="steps=$STEPS save_every=25 resume=auto roles.learner.num_threads=1"
LORA="model.lora.r=8 model.lora.alpha=16 optim.lr=$LR optim.warmup_steps=0 optim.schedule=constant"
SFT_CFG="configs/pipeline/1-sft.yaml $LORA optim.micro_batch_size=8 roles.learner.zero_stage=0 roles.learner.cpus=1"
GEN="--temperature 1.0 --max-new-tokens $NEW data.max_prompt_tokens=$PROMPT_TOKENS tracking.mode=offline"

gen() {  # gen SPLIT SAMPLES LIMIT
  local f=$OUT/gens-$1.jsonl
  if [[ -f $f ]]; then log "$f: generated (skipped)"; return; fi
  log "generate $2 replies per HH $1 prompt -> $f"
  $RLC generate --model "$BASE" --prompts hh-rlhf data.split="$1" --limit $3 -n $2 --seed 0 $GEN \
      output_dir="$OUT/gen-$1" --out "$f" > "$OUT/gen-$1.log" 2>&1
  tail -4 "$OUT/gen-$1.log" | head -1
}

evaluate() {  # evaluate NAME ALPHA0 [--adapter DIR | --policy DIR]
  local m=$1 a0=$2
  shift 2
  if [[ -f $OUT/$m/eval.json ]]; then log "$m: evaluated (skipped)"; return; fi
  $RLC eval qadapter configs/qadapter.yaml $COMMON algo.alpha0="$a0" output_dir="$OUT/$m" "$@" \
      --pairs $EVAL_PAIRS --replayed $REPLAYED --new-tokens $NEW --original "$OUT/original_task.jsonl" \
      --out "$OUT/$m/eval.json"
}

sample() {  # sample NAME [generate flags]: one reply per held-out prompt, the same seed (0: HH's split) for all
  local m=$1
  shift
  if [[ -f $OUT/$m/samples.jsonl ]]; then log "$m: sampled (skipped)"; return; fi
  $RLC generate --prompts hh-rlhf data.split=validation --limit $SAMPLE_PROMPTS -n 1 --seed 0 $GEN \
      output_dir="$OUT/$m" --out "$OUT/$m/samples.jsonl" "$@"
}

method() {  # train, evaluate and sample one method (its log: $OUT/<m>.log)
  local m=$1 a0 scale
  log "$m: start"
  case $m in
    qa-official-a*|qa-a*)
      a0=${m##*-a}; scale=paper; [[ $m == qa-official-* ]] && scale=official
      [[ -f $OUT/$m/adapter/adapter_config.json ]] || \
        $RLC train configs/qadapter.yaml $COMMON output_dir="$OUT/$m" algo.pairs_per_step="$PAIRS" \
            algo.alpha0="$a0" algo.bt_scale=$scale $RUN roles.reference.num_threads=1
      evaluate "$m" "$a0" --adapter "$OUT/$m/adapter"
      sample "$m" --model "$BASE" --decoder qadapter --adapter "$OUT/$m/adapter" --alpha0 "$a0" ;;
    sft|replay)
      local extra="algo.batch_size=$PAIRS"
      [[ $m == replay ]] && extra="trainer=replay algo.batch_size=$((2 * PAIRS)) algo.replay_fraction=0.5 \
algo.replay_examples=$REPLAYED algo.replay_max_new_tokens=$NEW"
      [[ -f $OUT/$m/model/config.json ]] || \
        $RLC train $SFT_CFG $COMMON output_dir="$OUT/$m" $extra $RUN
      evaluate "$m" 0.01 --policy "$OUT/$m/model"
      sample "$m" --model "$OUT/$m/model" ;;
    dpo)
      [[ -f $OUT/$m/model/config.json ]] || \
        $RLC train configs/dpo.yaml $COMMON output_dir="$OUT/$m" algo.pairs_per_step="$PAIRS" algo.beta=0.1 \
            optim.lr="$LR" $RUN roles.reference.num_threads=1
      evaluate "$m" 0.01 --policy "$OUT/$m/model"
      sample "$m" --model "$OUT/$m/model" ;;
    *) echo "unknown method $m (qa-aX, qa-official-aX, sft, replay, dpo)" >&2; return 2 ;;
  esac
  log "$m: done"
}

if has gen; then  # two lanes: the train prompts; the validation prompts, then pi_1's own held-out samples
  gen train "$TRAIN_SAMPLES" "$TRAIN_PROMPTS" &
  lane=$!
  gen validation "$HELD_SAMPLES" "$HELD_PROMPTS"
  mkdir -p "$OUT/base"
  sample base --model "$BASE" > "$OUT/base-sample.log" 2>&1
  wait $lane
fi
if has pairs; then
  if [[ -f $PAIRS_FILE ]]; then log "$PAIRS_FILE: built (skipped)"; else
    $PY -m benchmarks.qadapter_pairs --gens "$OUT/gens-train.jsonl" "$OUT/gens-validation.jsonl" \
        --reward vader_sentiment --margin "$MARGIN" --out "$PAIRS_FILE"
  fi
fi
if has base; then  # before the lanes: it writes the original-task cache every eval reads
  log "base: evaluate pi_1"
  evaluate base 0.01 > "$OUT/base-eval.log" 2>&1
  sample base --model "$BASE" > "$OUT/base-sample.log" 2>&1
fi
if has methods; then  # JOBS lanes, methods dealt round-robin; each lane runs its methods one after another
  read -r -a ms <<< "$METHODS"
  pids=()
  for ((j = 0; j < JOBS; j++)); do
    ( for ((i = j; i < ${#ms[@]}; i += JOBS)); do
        m=${ms[i]}
        log "$m: start (log $OUT/$m.log)"
        set +e; ( set -e; method "$m" ) > "$OUT/$m.log" 2>&1; rc=$?; set -e  # set -e holds inside method
        if ((rc)); then echo "$m failed (exit $rc): see $OUT/$m.log" >&2; exit 1; fi
        log "$m: done"
      done ) &
    pids+=($!)
  done
  fail=0
  for p in "${pids[@]}"; do wait "$p" || fail=1; done
  ((fail == 0)) || exit 1
fi
if has table; then
  $PY -m benchmarks.qadapter_sentiment_table --runs "$OUT" --methods "base $METHODS" --out "$RESULT" \
      --command "bash benchmarks/qadapter_sentiment_135m.sh" --settings "$SIZES"
fi
