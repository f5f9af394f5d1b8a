#!/usr/bin/env bash
# Issue 23's GPU evidence, in one command for a borrowed CUDA machine (one H200, 16 cores):
#
#   1. benchmarks/transfer.py, the full label-efficiency curve: 2 targets x 6 sizes x 2 arms
#      x 3 seeds = 72 runs + one pretraining, 8 processes sharing the GPU (hard limit
#      TRANSFER_S seconds, default 330; every finished point is saved as it lands);
#   2. a lesion study of the pretrained ResNet-20 (resnetlab analyze lesion), whose report
#      explains any block it finds essential (hard limit 60 s).
#
# Fashion-MNIST must travel with the tree: before the call, on the workstation, run
#   bash benchmarks/gpu_evidence.sh --prepare
# (copies /usr/share/datasets/fashion-mnist into .data/fashion-mnist, git-ignored via
# .git/info/exclude, ~30 MB) and name ".data" in the call's carry.  Then, on the GPU machine:
#   bash benchmarks/gpu_evidence.sh
# It writes at most 8 files into $OUT (default ./gpu-evidence): transfer_curve.json,
# transfer_curve.png, transfer.log, lesion.json, lesion.png, lesion.log, env.txt.
# The whole script stays under ~7 minutes (TRANSFER_S + 60 s + data preparation).
set -u
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p .data/fashion-mnist
    cp /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/
    grep -qx '/.data/' .git/info/exclude 2>/dev/null || echo '/.data/' >> .git/info/exclude
    du -sh .data
    exit 0
fi

OUT=${OUT:-$PWD/gpu-evidence}
mkdir -p "$OUT"
WORK=${WORK:-/tmp/resnetlab-gpu-evidence}
PY=${PY:-python3}
JOBS=${JOBS:-8}
TRANSFER_S=${TRANSFER_S:-330}
DATA=.data/fashion-mnist
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || DATA=/usr/share/datasets/fashion-mnist
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

{
    date -u; nproc; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1
    $PY -c "import torch, sklearn; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'sklearn', sklearn.__version__)"
    echo "data: $DATA"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 1. the label-efficiency curve (timeout: a hard stop; the JSON keeps what finished)
timeout -k 10 "$TRANSFER_S" $PY benchmarks/transfer.py --device cuda --jobs "$JOBS" \
    --data-dir "$DATA" --out "$WORK/transfer" 2>&1 | tee "$OUT/transfer.log"
status=${PIPESTATUS[0]}
if [ "$status" != 0 ] && [ -f "$WORK/transfer/transfer_curve.json" ]; then
    echo "transfer.py exited $status: summarising the points that finished" | tee -a "$OUT/transfer.log"
    timeout 60 $PY benchmarks/transfer.py --from-json "$WORK/transfer/transfer_curve.json" \
        --out "$WORK/transfer-partial" 2>&1 | tee -a "$OUT/transfer.log"
    cp "$WORK/transfer-partial/transfer_curve.png" "$OUT/" 2>/dev/null
    cp "$WORK/transfer-partial/transfer_curve.json" "$OUT/" 2>/dev/null
else
    cp "$WORK/transfer/transfer_curve.json" "$WORK/transfer/transfer_curve.png" "$OUT/" 2>/dev/null
fi

# 2. lesions of the pretrained network (its folder has a test split)
if [ -d "$WORK/transfer/runs/pretrain" ]; then
    timeout -k 5 60 $PY -m resnetlab analyze lesion "$WORK/transfer/runs/pretrain" \
        --out "$WORK/lesion" 2>&1 | tee "$OUT/lesion.log"
    cp "$WORK/lesion/lesion.json" "$WORK/lesion/lesion.png" "$OUT/" 2>/dev/null
fi
ls -l "$OUT"
