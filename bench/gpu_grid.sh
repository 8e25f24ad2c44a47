#!/usr/bin/env bash
# One short GPU lease, prepared in advance: every cell below is its own `clip4rec compare` process on the
# one GPU (the models are small, so the cells share it), then the reports are written from the finished
# cells without training anything more.
#   - Amazon Beauty, leave-one-out: id, text, fused-id (item-LLM title vectors), seeds 0..BEAUTY_SEEDS-1.
#   - ML-100K SASRec (variant id), leave-one-out: the default and three candidate recipes, ML_SEEDS seeds each;
#     bench/recipes.py --select then picks one by validation NDCG@10 alone.
#   - ML-100K cold split: text, fused, fused-id with the cold-start regularisers in configs/content_*.yaml.
# Usage (repo root, on a machine with CUDA and the package importable):
#   OUT=/tmp/gpu BUDGET=420 bash bench/gpu_grid.sh
# Measured on one H100 (2026-11-27): 18 such processes at once slowed a Beauty epoch to ~8 s and an ML-100K
# epoch to ~2.5 s (CPU-side work of 18 Python processes on 16 cores); run fewer at once for speed.
# Every training run is capped at BUDGET-60 s (a capped run says so in its report); the whole grid is killed
# at BUDGET s, and the reports cover the seeds that finished for every variant.
set -u
OUT=${OUT:?set OUT to an output folder}
BUDGET=${BUDGET:-420}
BEAUTY_SEEDS=${BEAUTY_SEEDS:-3}
ML_SEEDS=${ML_SEEDS:-5}
COLD_SEEDS=${COLD_SEEDS:-1}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-200}
CLIP4REC=${CLIP4REC:-python3 -m clip4rec.cli}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
R=${R:-$OUT/reports}
mkdir -p "$R" "$OUT/logs"
cap=$((BUDGET - 60))

pids=()
for v in id text fused-id; do
  for ((s = 0; s < BEAUTY_SEEDS; s++)); do
    timeout "$BUDGET" $CLIP4REC compare artifacts/beauty --variants "$v" --seed-base "$s" --seeds 1 --splits loo \
      --store artifacts/store_beauty --config configs/beauty_item_llm_text.yaml --device "$DEVICE" \
      --epochs "$EPOCHS" --time-limit "$cap" --quiet --out "$R/beauty" >"$OUT/logs/beauty_${v}_$s.log" 2>&1 &
    pids+=($!)
  done
done
for recipe in default dropout03 dropout02 lr2e3; do
  config=()
  [ "$recipe" != default ] && config=(--config "configs/sasrec_$recipe.yaml")
  timeout "$BUDGET" $CLIP4REC compare artifacts/ml100k --variants id --seeds "$ML_SEEDS" --splits loo \
    "${config[@]}" --device "$DEVICE" --epochs "$EPOCHS" --time-limit "$cap" --quiet \
    --out "$R/ml100k_$recipe" >"$OUT/logs/ml100k_$recipe.log" 2>&1 &
  pids+=($!)
done
# Cold start on ML-100K (cold split): the baselines and content variants under the seen-excluded protocol.
for recipe in exclude_seen; do
  config=()
  [ "$recipe" != default ] && config=(--config "configs/$recipe.yaml")
  timeout "$BUDGET" $CLIP4REC compare artifacts/ml100k --variants pop,content-knn,id,text,fused,fused-id --seeds "$COLD_SEEDS" \
    --splits cold --store artifacts/store_ml100k "${config[@]}" --device "$DEVICE" --epochs "$EPOCHS" \
    --time-limit "$cap" --quiet --out "$R/cold_$recipe" >"$OUT/logs/cold_$recipe.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
echo "grid finished after ${SECONDS}s"

# Seeds 0..n-1 finished for every variant of a report (contiguous from 0, as compare numbers them).
finished_seeds() {
  python3 - "$@" <<'PY'
import sys
from pathlib import Path
out, variants = Path(sys.argv[1]), sys.argv[2].split(",")
split = sys.argv[3]
n = 0
while all((out / "runs" / split / v / f"seed{n}" / "metrics.json").exists() for v in variants):
    n += 1
print(n)
PY
}
report() {  # report DIR VARIANTS SPLIT DATASET [args...]: write the report from finished cells only
  local dir=$1 variants=$2 split=$3 dataset=$4; shift 4
  local n; n=$(finished_seeds "$dir" "$variants" "$split")
  if [ "$n" -lt 1 ]; then echo "no finished seed in $dir"; return; fi
  $CLIP4REC compare "$dataset" --variants "$variants" --seeds "$n" --splits "$split" "$@" --device "$DEVICE" \
    --epochs "$EPOCHS" --time-limit "$cap" --quiet --out "$dir" >"$OUT/logs/report_$(basename "$dir").log" 2>&1 \
    && echo "report $(basename "$dir"): $n seed(s)"
}
report "$R/beauty" id,text,fused-id loo artifacts/beauty --store artifacts/store_beauty \
  --config configs/beauty_item_llm_text.yaml
report "$R/ml100k_default" id loo artifacts/ml100k
for recipe in dropout03 dropout02 lr2e3; do
  report "$R/ml100k_$recipe" id loo artifacts/ml100k --config "configs/sasrec_$recipe.yaml"
done
for recipe in exclude_seen; do
  config=(--config "configs/$recipe.yaml")
  report "$R/cold_$recipe" pop,content-knn,id,text,fused,fused-id cold artifacts/ml100k --store artifacts/store_ml100k "${config[@]}"
done
echo "done after ${SECONDS}s"
