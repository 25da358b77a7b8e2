#!/bin/bash
# The original project's four recipes trained on an accelerator, packed into
# one archive for the trip back:
#
#     bash scripts/accelerator_results.sh OUT_DIR [MODEL...]
#
# MODEL is a configs/MODEL.py name, with a variant if wanted (resnet18:tuned;
# default: alexnet resnet18 resnet50 shufflenet_v2, the original project's
# recipes). Each trains unmodified apart from bf16 and resident input,
# under a time limit (TIME_LIMIT_S per model, default 3600: a stopped run is
# resumable and still evaluated), then `tiny_flax.evaluate` writes its report.
# OUT_DIR/results.tar.gz (at most 16 MB) holds every run's report, TensorBoard
# events and log, and timings.tsv. Needs no TensorFlow.
#
# EXTRA_FLAGS are appended to every training command, after this script's
# own, e.g. '--config.dataset.manual_dir=/data' (the folder of
# tiny-imagenet-200.zip), or '--config.num_train_steps=2 ...' to check the
# script on a CPU. The runs go to OUT_DIR/runs, the arrays to data_dir.
set -u -o pipefail
out=${1:?usage: bash scripts/accelerator_results.sh OUT_DIR [MODEL...]}
shift
models=${*:-alexnet resnet18 resnet50 shufflenet_v2}
python=${PYTHON:-python3}
limit=${TIME_LIMIT_S:-3600}
max_bytes=$((16 * 1024 * 1024))
mkdir -p "$out/runs" "$out/pack"
export PYTHONUNBUFFERED=1
timings="$out/pack/timings.tsv"
printf 'model\ttrain_exit\ttrain_s\tevaluate_exit\tevaluate_s\n' > "$timings"

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null
  "$python" -c 'import sys, jax, flax, optax
print("python", sys.version.split()[0], "jax", jax.__version__, "flax",
      flax.__version__, "optax", optax.__version__, jax.devices())'
} > "$out/pack/versions.txt" 2>&1

for model in $models; do
  name=${model%%:*}
  if [ ! -f "configs/$name.py" ]; then
    echo "Unknown model $name: name a file of configs/ (alexnet resnet18 resnet50 shufflenet_v2)." >&2
    exit 2
  fi
  config="configs/$name.py${model#"$name"}"
  model=${model/:/_}
  workdir="$out/runs/$model"
  mkdir -p "$out/pack/$model"
  start=$(date +%s)
  # SIGTERM at the limit: the trainer saves a checkpoint and exits 0.
  timeout --preserve-status --kill-after=120 "$limit" "$python" -m tiny_flax.main \
    --config="$config" --workdir="$workdir" --progress=off \
    --config.half_precision=true --config.input.on_device=true \
    ${EXTRA_FLAGS:-} > "$out/pack/$model/train.log" 2>&1
  train_exit=$?
  train_s=$(( $(date +%s) - start ))
  start=$(date +%s)
  # The best validation top-1 (the latest checkpoint before any epoch ended).
  "$python" -m tiny_flax.evaluate --workdir="$workdir" \
    > "$out/pack/$model/evaluate.log" 2>&1
  evaluate_exit=$?
  printf '%s\t%s\t%s\t%s\t%s\n' "$model" "$train_exit" "$train_s" \
    "$evaluate_exit" "$(( $(date +%s) - start ))" >> "$timings"
  echo "$model: training exit $train_exit after ${train_s} s, evaluation exit $evaluate_exit."
  tail -n 1 "$out/pack/$model/evaluate.log"
  cp "$workdir"/events.out.tfevents.* "$workdir"/*.json "$out/pack/$model/" 2>/dev/null
  [ -d "$workdir/report" ] && cp -r "$workdir/report" "$out/pack/$model/"
done

tar -czf "$out/results.tar.gz" -C "$out/pack" .
size=$(stat -c %s "$out/results.tar.gz")
if [ "$size" -gt "$max_bytes" ]; then
  echo "$out/results.tar.gz is $size bytes, over the 16 MB that can travel back." >&2
  exit 1
fi
echo "Wrote $out/results.tar.gz ($size bytes)."
! grep -qv $'\t0\t.*\t0\t' <(tail -n +2 "$timings")
