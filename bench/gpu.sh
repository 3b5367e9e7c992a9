#!/bin/bash
# The device check: the CUDA path end to end and GPU timings, every step time-boxed, outputs in OUT (default
# results/bench/gpu). Needs Fashion-MNIST in /usr/share/datasets/fashion-mnist and faiss-cpu >= 1.14.
#   bash bench/gpu.sh [OUT]
# Steps: the GPU tests; the default job on cuda; torchrun (nccl, one process) on cuda; the training benchmarks on
# cuda: bench/epoch_times.py (sections 1 and 3), bench/step_segments.py (section 2), bench/gpu_extras.py (the
# batch-size, thread and Adam ablations), bench/step_ratio.py (section 0 and its speed candidates); a Fashion-MNIST
# ref fold on cuda; the default job on the same machine's CPU cores, for the side-by-side time.
out=${1:-results/bench/gpu}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
step() { local name=$1 limit=$2; shift 2; echo "=== $name: $*"; local t0=$(date +%s%N)
  timeout "$limit" "$@" 2>&1 | tr '\r' '\n' | grep -v 'it/s\|s/it\|?it\|^ *$' > "$out/$name.txt"
  echo "=== $name: exit ${PIPESTATUS[0]}, $(( ($(date +%s%N) - t0) / 1000000 )) ms" | tee -a "$out/$name.txt"; }
nvidia-smi -L
python3 -c "import torch, faiss; print('torch', torch.__version__, 'faiss', faiss.__version__, torch.cuda.get_device_name())"
step gpu_tests 60 python3 -m pytest -q tests/test_graph.py -k gpu
step main_cuda 100 python3 main.py --device cuda --log_dir /tmp/gpu_main_cuda
step torchrun_nccl 70 torchrun --standalone --nproc_per_node 1 main.py --device cuda --method hagcn itq --task gcn \
  --exp_hash_len 32 --log_dir /tmp/gpu_torchrun
step train_cuda_epochs 180 python3 bench/epoch_times.py --device cuda --reps 3 --steps 50
step train_cuda_segments 150 python3 bench/step_segments.py --device cuda --profile_steps 30
step train_cuda_extras 90 python3 bench/gpu_extras.py --device cuda --profile_steps 30
step train_cuda_candidates 120 python3 bench/step_ratio.py --device cuda --candidates --n_train 20000
step fashion_cuda 120 python3 main.py --device cuda --dataset fashion_mnist --split ref --folds 1 --num_epochs 10 \
  --method hagcn itq --task gcn --exp_hash_len 64 --log_dir /tmp/gpu_fashion
step main_cpu 70 python3 main.py --device cpu --log_dir /tmp/gpu_main_cpu
