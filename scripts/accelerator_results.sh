#!/bin/bash
# The original project's four recipes trained on an accelerator, packed into
# one archive for the trip back:
#
#     bash scripts/accelerator_results.sh OUT_DIR [MODEL...]
#
# MODEL is a configs/MODEL.py name, with a variant if wanted (resnet18:tuned;
# default: alexnet resnet18 resnet50 shufflenet_v2, the original project's
# recipes). Each trains unmodified apart from bf16 and resident input,
# under a time limit (TIME_LIMIT_S per model, default 3600), then
# `tiny_flax.evaluate` writes its report. A stopped run is still evaluated;
# the same command with the same OUT_DIR resumes it (train.log grows).
# OUT_DIR/results.tar.gz (at most 16 MB) holds every run's report, TensorBoard
# events and log, timings.tsv, and summary.md (scripts/results_table.py: a
# row per run, also printed). Needs no TensorFlow.
#
# EXTRA_FLAGS are appended to every training command, after this script's
# own, e.g. '--config.dataset.manual_dir=/data' (the folder of
# tiny-imagenet-200.zip), or '--config.num_train_steps=2 ...' to check the
# script on a CPU. The runs go to OUT_DIR/runs, the arrays to data_dir.
#
# DEADLINE_S (default 0: none) bounds the whole script, for a device lent by
# the call: each training's limit is cut to end EVAL_RESERVE_S (default 90)
# before it, leaving time to stop, evaluate and pack; a model with no time
# left is skipped (timings.tsv says so) and the script exits 1.
#
# JOBS runs that many models at a time on the one accelerator (default 1),
# each with an equal share of its memory (XLA_PYTHON_CLIENT_MEM_FRACTION,
# unless set): their steps then fill each other's idle time (compilation,
# validation, host dispatch), and their images/s are those of a shared
# device. The arrays are decoded once first (prepare.log).
set -u -o pipefail
script_start=$(date +%s)
out=${1:?usage: bash scripts/accelerator_results.sh OUT_DIR [MODEL...]}
shift
models=${*:-alexnet resnet18 resnet50 shufflenet_v2}
python=${PYTHON:-python3}
limit=${TIME_LIMIT_S:-3600}
parallel=${JOBS:-1}
deadline=${DEADLINE_S:-0}
reserve=${EVAL_RESERVE_S:-90}
[[ $parallel =~ ^[1-9][0-9]*$ ]] || { echo "JOBS must be a whole number >= 1, got '$parallel'." >&2; exit 2; }
[[ $limit =~ ^[1-9][0-9]*$ ]] || { echo "TIME_LIMIT_S must be a whole number of seconds >= 1, got '$limit'." >&2; exit 2; }
for setting in "DEADLINE_S=$deadline" "EVAL_RESERVE_S=$reserve"; do
  [[ ${setting#*=} =~ ^[0-9]+$ ]] || { echo "${setting%%=*} must be a whole number of seconds, got '${setting#*=}'." >&2; exit 2; }
done
max_bytes=$((16 * 1024 * 1024))
for model in $models; do
  if [ ! -f "configs/${model%%:*}.py" ]; then
    echo "Unknown model ${model%%:*}: name a file of configs/ (alexnet resnet18 resnet50 shufflenet_v2)." >&2
    exit 2
  fi
done
mkdir -p "$out/runs" "$out/pack"
export PYTHONUNBUFFERED=1
timings="$out/pack/timings.tsv"
printf 'model\tlimit_s\ttrain_exit\ttrain_s\tevaluate_exit\tevaluate_s\n' > "$timings"

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null
  "$python" -c 'import sys, jax, flax, optax
print("python", sys.version.split()[0], "jax", jax.__version__, "flax",
      flax.__version__, "optax", optax.__version__, jax.devices())'
} > "$out/pack/versions.txt" 2>&1

if [ "$parallel" -gt 1 ] && [ -z "${XLA_PYTHON_CLIENT_MEM_FRACTION:-}" ]; then
  export XLA_PYTHON_CLIENT_MEM_FRACTION=$(awk -v n="$parallel" 'BEGIN { printf "%.3f", 0.9 / n }')
fi
echo "jobs $parallel, memory fraction ${XLA_PYTHON_CLIENT_MEM_FRACTION:-default}" >> "$out/pack/versions.txt"

first=${models%% *}
start=$(date +%s)
"$python" -m tiny_flax.data --config="configs/${first%%:*}.py" ${EXTRA_FLAGS:-} \
  > "$out/pack/prepare.log" 2>&1
prepare_exit=$?
echo "Arrays: exit $prepare_exit after $(( $(date +%s) - start )) s." | tee -a "$out/pack/prepare.log"
[ "$prepare_exit" -eq 0 ] || { tail -n 3 "$out/pack/prepare.log" >&2; exit 1; }

run_model() {
  local model=$1 name=${1%%:*}
  local config="configs/$name.py${model#"$name"}"
  model=${model/:/_}
  local workdir="$out/runs/$model"
  mkdir -p "$out/pack/$model"
  local start=$(date +%s) run_limit=$limit
  if [ "$deadline" -gt 0 ]; then
    local left=$(( script_start + deadline - reserve - start ))
    [ "$left" -lt "$run_limit" ] && run_limit=$left
  fi
  if [ "$run_limit" -le 0 ]; then
    printf '%s\t0\tskipped\t0\tskipped\t0\n' "$model" >> "$timings"
    echo "$model: skipped, no time left before DEADLINE_S=$deadline."
    return
  fi
  # SIGTERM at the limit: the trainer saves a checkpoint and exits 0.
  timeout --preserve-status --kill-after=120 "$run_limit" "$python" -m tiny_flax.main \
    --config="$config" --workdir="$workdir" --progress=off \
    --config.half_precision=true --config.input.on_device=true \
    ${EXTRA_FLAGS:-} >> "$out/pack/$model/train.log" 2>&1
  local train_exit=$?
  local train_s=$(( $(date +%s) - start ))
  start=$(date +%s)
  # The best validation top-1 (the latest checkpoint before any epoch ended).
  "$python" -m tiny_flax.evaluate --workdir="$workdir" \
    > "$out/pack/$model/evaluate.log" 2>&1
  local evaluate_exit=$?
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$model" "$run_limit" "$train_exit" "$train_s" \
    "$evaluate_exit" "$(( $(date +%s) - start ))" >> "$timings"
  echo "$model: training exit $train_exit after ${train_s} s, evaluation exit $evaluate_exit."
  tail -n 1 "$out/pack/$model/evaluate.log"
  cp "$workdir"/events.out.tfevents.* "$workdir"/*.json "$out/pack/$model/" 2>/dev/null
  [ -d "$workdir/report" ] && cp -r "$workdir/report" "$out/pack/$model/"
}

for model in $models; do
  if [ "$parallel" -gt 1 ]; then
    while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n; done
    run_model "$model" &
  else
    run_model "$model"
  fi
done
wait

folders=()
for model in $models; do folders+=("$out/pack/${model/:/_}"); done
"$python" -m scripts.results_table "${folders[@]}" > "$out/pack/summary.md" \
  2> "$out/pack/summary.log" && cat "$out/pack/summary.md"

tar -czf "$out/results.tar.gz" -C "$out/pack" .
size=$(stat -c %s "$out/results.tar.gz")
if [ "$size" -gt "$max_bytes" ]; then
  echo "$out/results.tar.gz is $size bytes, over the 16 MB that can travel back." >&2
  exit 1
fi
echo "Wrote $out/results.tar.gz ($size bytes)."
awk -F '\t' 'NR > 1 && ($3 != "0" || $5 != "0") { failed = 1 } END { exit failed }' "$timings"
