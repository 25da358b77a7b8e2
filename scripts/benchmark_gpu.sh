#!/bin/bash
# The accelerator table of docs/performance.md, in one call on a GPU machine:
#
#     bash scripts/benchmark_gpu.sh OUT_DIR
#
# Per model, in its own process (so that peak memory is the model's):
# tiny_flax bf16 against PyTorch AMP + channels_last, eager and torch.compile,
# and training from the split resident on the device with the device's idle
# share; then ResNet50 at 224x224 for MFU (under each of OPTION_SETS' XLA
# options); then ResNet18's original batch (128) from the resident split at
# each of DISPATCH_STEPS steps per dispatch. Each
# process has a time limit and writes its JSON after every measurement, so a
# slow torch.compile costs only its own column. Needs no TensorFlow.
set -u
out=${1:?usage: bash scripts/benchmark_gpu.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
# JAX preallocates 75% of the GPU by default; leave torch room in the same process.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}
python=${PYTHON:-python3}
limit=${MODEL_TIME_LIMIT_S:-180}
# MODELS='resnet50 alexnet' RESNET50_224=0 DISPATCH_STEPS= runs a subset (device
# leases are short; MODELS= runs none of the per-model measurements);
# BENCHMARK_FLAGS='--quick --batch_size=8' checks this script on a CPU.

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  "$python" -c 'import sys, jax, jaxlib, flax, optax, torch, torchvision
print("python", sys.version.split()[0], "jax", jax.__version__, "jaxlib",
      jaxlib.__version__, "flax", flax.__version__, "optax", optax.__version__,
      "torch", torch.__version__, "torchvision", torchvision.__version__)
print(jax.devices())'
} 2>&1 | tee "$out/versions.txt"

for model in ${MODELS-resnet18 shufflenet_v2_x1_0 resnet50 alexnet}; do
  timeout "$limit" "$python" -m scripts.benchmark --models="$model" --steps=50 \
    --resident --torch_compile --json="$out/$model.json" ${BENCHMARK_FLAGS:-} 2>&1 | tee -a "$out/log.txt"
  if ! grep -q tiny_flax_img_s "$out/$model.json" 2>/dev/null; then
    echo "$model failed before its first measurement; not running the others." >&2
    exit 1
  fi
done
# OPTION_SETS='|--xla_gpu_force_conv_nhwc=true|--xla_gpu_autotune_level=2':
# ResNet50 at 224 under each set of XLA options, '|' between sets (the empty
# one: the platform's defaults), each in its own process with its own limit.
IFS='|' read -r -a option_sets <<< "${OPTION_SETS:-}"
option_flags=()
for s in "${option_sets[@]}"; do option_flags+=("--compiler_options=$s"); done
if [ "${RESNET50_224:-1}" = 1 ]; then
  timeout $((limit * (${#option_sets[@]} > 1 ? ${#option_sets[@]} : 1))) \
    "$python" -m scripts.benchmark --models=resnet50 --image_size=224 \
    --steps=30 --json="$out/resnet50_224.json" "${option_flags[@]}" \
    ${BENCHMARK_FLAGS:-} 2>&1 | tee -a "$out/log.txt"
fi
for k in ${DISPATCH_STEPS-1 16}; do
  timeout "$limit" "$python" -m scripts.benchmark --models=resnet18 --batch_size=128 \
    --nostep --resident --notorch --steps_per_dispatch="$k" --steps=50 \
    --json="$out/resnet18_b128_dispatch$k.json" ${BENCHMARK_FLAGS:-} 2>&1 | tee -a "$out/log.txt"
done
