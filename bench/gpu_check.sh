#!/usr/bin/env bash
# The project's GPU checks, as one script for a lent GPU machine (no network there; its own python3 with
# PyTorch). Prints the GPU tables for the README and runs the `gpu` profile's training code end to end on
# the proxy data (the machine has no VOC): torchrun + NCCL, bf16 + channels_last, interrupted and resumed;
# and the released-Caffe-model path with random weights, float32 against bf16 (bench/caffe_check.py; its
# Python part runs on a CPU too: python bench/caffe_check.py --size 65).
#
#     bash bench/gpu_check.sh [OUTDIR]
set -uo pipefail
OUTDIR=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUTDIR"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 DLIB_RESULTS_DIR=$OUTDIR/results
PY=${PYTHON:-python3}
nvidia-smi -L
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name(0))"

if [ -z "${SKIP_BENCH:-}" ]; then
    echo "== bench_models --gpu-only"
    $PY bench/bench_models.py --gpu-only 2>&1 | tee "$OUTDIR/bench_models_gpu.txt"
    echo "== bench_train --gpu-only"
    $PY bench/bench_train.py --gpu-only 2>&1 | tee "$OUTDIR/bench_train_gpu.txt"
    echo "== bench_crf --quick (the CRF's torch backend on the GPU, 1 image and batches of 16)"
    $PY bench/bench_crf.py --quick --json "$OUTDIR/bench_crf.json" 2>&1 | tee "$OUTDIR/bench_crf_gpu.txt"
fi

echo "== released Caffe model path (dlib.nets.caffe): random weights of the released layout written by the tests' writer,"
echo "   loaded as evaluate --caffemodel does; float32 (TF32 off, evaluate's default for it) against bf16: time, agreement"
$PY bench/caffe_check.py --json "$OUTDIR/caffe_check.json" 2>&1 | tee "$OUTDIR/caffe_check.txt"
$PY bench/caffe_check.py --model deeplab_v1_largefov --json "$OUTDIR/caffe_check_largefov.json" 2>&1 \
    | tee "$OUTDIR/caffe_check_largefov.txt"

echo "== gpu profile end to end on proxy data: 40 iterations, stopped at 20, resumed (torchrun, nccl)"
# No ImageNet weights there: a random init with measured BN statistics (bench/bn_init.py) stands in. From
# that init the paper's lr diverges (the features are not ImageNet's), so a tiny lr: this checks the code
# path (torchrun, NCCL, bf16, channels_last, checkpoint, resume, evaluation), not learning.
RUN=/tmp/gpu_check_run
rm -rf "$RUN"
$PY bench/bn_init.py deeplab_v2_resnet101_aspp /tmp/bn_init.pt
SETS=(--set data.dataset='"proxy"' --set model.pretrained='"/tmp/bn_init.pt"'  --set train.iterations=40
      --set train.base_lr=1e-6       --set train.checkpoint_every=20 --set train.log_every=10 --set data.loader_workers=4
      --set data.proxy_image_size=224)  # 321-px crops fit 224-px proxy images scaled by up to 1.5 (dlib.training.limits)
TR=($PY -m torch.distributed.run --standalone --nproc_per_node=1 -m dlib)
"${TR[@]}" train --profile gpu "${SETS[@]}" --out "$RUN" --no-progress --stop-after 20 2>&1 | tee "$OUTDIR/train_gpu.txt"
"${TR[@]}" train --profile gpu "${SETS[@]}" --out "$RUN" --no-progress 2>&1 | tee -a "$OUTDIR/train_gpu.txt"
$PY -m dlib evaluate --profile gpu "${SETS[@]}" --run "$RUN" --no-progress --max-images 50 2>&1 \
    | tee "$OUTDIR/evaluate_gpu.txt"
cp "$RUN/train_log.csv" "$OUTDIR/" 2>/dev/null
echo "gpu_check done"
