#!/usr/bin/env bash
# One short GPU lease, prepared in advance: the cells the CPU cannot afford, each its own `clip4rec compare`
# process on the one GPU (the models are small, so the cells share it); then the reports are written from the
# finished cells without training anything more.
#   - Amazon Beauty content report (issue 12): pop, content-knn, id, fused-id on MiniLM titles, both splits,
#     seeds 0..BEAUTY_SEEDS-1, trained to convergence (on the CPU each run had to stop at 18 minutes).
#   - User towers (issue 14): fused-id with the scratch tower and with SmolLM2 towers (TOWERS), ML-100K
#     leave-one-out seeds 0..ML_SEEDS-1 and Beauty leave-one-out seeds 0..BEAUTY_SEEDS-1.
# Usage (repo root, on a machine with CUDA, the package importable, artifacts/ holding the datasets and stores):
#   OUT=/tmp/gpu BUDGET=420 bash bench/gpu_grid.sh
# Measured on one H100 (2026-11-27): 18 such processes at once slowed a Beauty epoch to ~8 s and an ML-100K
# epoch to ~2.5 s (CPU-side work of 18 Python processes on 16 cores); run fewer at once for speed.
# Every training run is capped at BUDGET-60 s (a capped run says so in its report); the whole grid is killed
# at BUDGET s, and the reports cover the seeds that finished for every cell of a report.
set -u
OUT=${OUT:?set OUT to an output folder}
BUDGET=${BUDGET:-420}
BEAUTY_SEEDS=${BEAUTY_SEEDS:-3}
ML_SEEDS=${ML_SEEDS:-5}
TOWERS=${TOWERS:-smollm2-1L-lora,smollm2-2L-lora}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-200}
CLIP4REC=${CLIP4REC:-python3 -m clip4rec.cli}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
R=${R:-$OUT/reports}
mkdir -p "$R" "$OUT/logs"
cap=$((BUDGET - 60))

pids=()
cell() {  # cell NAME DATASET REPORT_DIR [compare args...]: one background compare process
  local name=$1 dataset=$2 dir=$3; shift 3
  timeout "$BUDGET" $CLIP4REC compare "$dataset" "$@" --device "$DEVICE" --epochs "$EPOCHS" \
    --time-limit "$cap" --quiet --out "$dir" >"$OUT/logs/$name.log" 2>&1 &
  pids+=($!)
}
BEAUTY=(--store artifacts/store_beauty --config configs/beauty_text.yaml)
ML=(--store artifacts/store_ml100k --config configs/ml100k_text.yaml)
for ((s = 0; s < BEAUTY_SEEDS; s++)); do
  for split in loo cold; do
    cell "beauty_${split}_$s" artifacts/beauty "$R/beauty_content" --variants pop,content-knn,id,fused-id \
      --seed-base "$s" --seeds 1 --splits "$split" "${BEAUTY[@]}"
  done
  for tower in ${TOWERS//,/ }; do
    cell "beauty_${tower}_$s" artifacts/beauty "$R/beauty_towers" --variants fused-id --backbones "$tower" \
      --seed-base "$s" --seeds 1 --splits loo "${BEAUTY[@]}"
  done
done
for ((s = 0; s < ML_SEEDS; s++)); do
  for tower in scratch ${TOWERS//,/ }; do
    cell "ml100k_${tower}_$s" artifacts/ml100k "$R/ml100k_towers" --variants fused-id --backbones "$tower" \
      --seed-base "$s" --seeds 1 --splits loo "${ML[@]}"
  done
done
wait "${pids[@]}"
echo "grid finished after ${SECONDS}s"
# Beauty's scratch tower cells are the content report's fused-id cells (same config): reused, not retrained.
mkdir -p "$R/beauty_towers/runs/loo/fused-id"
cp -rn "$R/beauty_content/runs/loo/fused-id/"seed* "$R/beauty_towers/runs/loo/fused-id/" 2>/dev/null

# Seeds 0..n-1 finished for every cell of a report (contiguous from 0, as compare numbers them). A cell is
# runs/<split>/<variant>/seed<k> (scratch) or runs/<split>/<variant>/<tower>/seed<k>.
finished_seeds() {
  python3 - "$@" <<'PY'
import sys
from pathlib import Path
out, cells, splits = Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3].split(",")
n = 0
while all((out / "runs" / split / cell / f"seed{n}" / "metrics.json").exists() for cell in cells for split in splits):
    n += 1
print(n)
PY
}
report() {  # report DIR CELLS SPLITS DATASET [compare args...]: write the report from finished cells only
  local dir=$1 cells=$2 splits=$3 dataset=$4; shift 4
  local n; n=$(finished_seeds "$dir" "$cells" "$splits")
  if [ "$n" -lt 1 ]; then echo "no finished seed in $dir"; return; fi
  $CLIP4REC compare "$dataset" --seeds "$n" --splits "$splits" "$@" --device "$DEVICE" --epochs "$EPOCHS" \
    --time-limit "$cap" --quiet --out "$dir" >"$OUT/logs/report_$(basename "$dir").log" 2>&1 \
    && echo "report $(basename "$dir"): $n seed(s)"
}
tower_cells() { local out=fused-id t; for t in ${TOWERS//,/ }; do out+=",fused-id/$t"; done; echo "$out"; }
report "$R/beauty_content" pop,content-knn,id,fused-id loo,cold artifacts/beauty \
  --variants pop,content-knn,id,fused-id "${BEAUTY[@]}"
report "$R/beauty_towers" "$(tower_cells)" loo artifacts/beauty --variants fused-id --backbones "scratch,$TOWERS" \
  "${BEAUTY[@]}"
report "$R/ml100k_towers" "$(tower_cells)" loo artifacts/ml100k --variants fused-id --backbones "scratch,$TOWERS" \
  "${ML[@]}"
echo "done after ${SECONDS}s"
