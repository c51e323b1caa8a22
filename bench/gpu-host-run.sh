#!/usr/bin/env bash
# The GPU-host runs behind BENCHMARKS.md's GPU sections. Run from the project root on a host
# prepared as in BENCHMARKS.md, "Running on the GPU host" (`bash ../shared/gpu-host/pack.sh`
# here; the GPU host gets .gpu/, dist/ and .evalsets/ — a copy of the held-out evaluation texts):
#   bash bench/gpu-host-run.sh bench OUTDIR     # attention kernels (+ PyTorch SDPA peer), whole models
#   bash bench/gpu-host-run.sh eval OUTDIR      # passkey and perplexity of hip-testbed-mini, npm start demo
#   bash bench/gpu-host-run.sh passkey OUTDIR   # the passkey part of eval
#   bash bench/gpu-host-run.sh sweep|sweep2 OUTDIR  # one HiP option changed at a time (passkey, mini)
#   bash bench/gpu-host-run.sh reps OUTDIR      # representatives per half: passkey (mini) and mask cost
#   bash bench/gpu-host-run.sh shift OUTDIR     # shifted blocks between decode refreshes: passkey (mini), decode cost
#   bash bench/gpu-host-run.sh shift2 OUTDIR    # the same with the sink shifted too (m28shift2: the 28m, as m28)
#   bash bench/gpu-host-run.sh merge OUTDIR     # merge the JSON files a stage cut short left in OUTDIR/j
#   bash bench/gpu-host-run.sh m28|m28final|m28decode|m28shift OUTDIR  # hip-testbed-28m from .m28/ (host prepared by an earlier call)
# Each stage writes at most 8 files into OUTDIR (the device tool brings 8 back).
set -uo pipefail
stage=${1:?stage: bench or eval}
out=${2:?output folder}
mkdir -p "$out"
[ -f .gpu/enter.sh ] && source .gpu/enter.sh
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
cli="node dist/src/cli/main.js"
# Dawn prints every shader's (empty) compilation log; keep the tables readable.
quiet() { grep -v -e '^Compilation log for' -e '^ *$' -e 'warning' -e '^ *\^' -e 'subgroupMatrix' ; }
# Run a step with a wall-clock limit; its output goes to stdout and to the stage log.
step() {
  local limit=$1; shift
  echo "=== $* (limit ${limit}s) $(date -u +%H:%M:%S)"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | quiet
  echo "=== exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s"
}

# Merges the JSON files of folder $1 into one object keyed by file name, written to $2 (the
# device brings back 8 files at most).
merge_json() {
  node -e 'const fs=require("fs"),d=process.argv[1],o={};for(const f of fs.readdirSync(d).sort())o[f]=JSON.parse(fs.readFileSync(d+"/"+f,"utf8"));fs.writeFileSync(process.argv[2],JSON.stringify(o,null,1))' "$1" "$2"
}

case $stage in
  bench)
    {
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
      step 330 $cli bench attention --peer sdpa --seq-lens 4096,8192,16384,32768,65536,131072 \
        --hip-seq-lens 262144,524288,1048576 --json "$out/attention.json" --markdown "$out/attention.md"
      step 150 $cli bench model --model llama3-8b --contexts 8192,32768 --attention dense,hip \
        --json "$out/model-llama3-8b.json" --markdown "$out/model-llama3-8b.md"
      step 90 $cli bench model --model models/hip-testbed-mini --contexts 8192,32768,131072 --attention dense,hip,streaming \
        --json "$out/model-mini.json" --markdown "$out/model-mini.md"
    } 2>&1 | tee "$out/bench.log"
    ;;
  eval)
    {
      files=()
      for f in .evalsets/*.txt .evalsets/*.raw; do files+=(--file "$f"); done
      pk="$cli eval passkey --device webgpu --depths 0,0.25,0.5,0.75,1"
      step 120 $pk --lengths 4096,8192 --trials 10 --seed 7 --json "$out/passkey.json" --chart "$out/passkey.svg"
      step 100 $pk --lengths 8192 --trials 20 --seed 21 --attention dense,hip,streaming --json "$out/passkey-s21.json"
      step 100 $pk --lengths 8192 --trials 20 --seed 21 --haystack .evalsets/grover_cleveland.txt --attention dense,hip,streaming --json "$out/passkey-s21-grover.json"
      step 330 $cli eval ppl --device webgpu "${files[@]}" --context 1024,2048,4096,8192 --max-windows 4 \
        --json "$out/ppl.json" --chart "$out/ppl.svg"
      step 120 $cli demo --device webgpu --no-progress --json "$out/demo.json"
    } 2>&1 | tee "$out/eval.log"
    ;;
  passkey)
    # The passkey part of `eval` alone (prefill-only perplexity does not change with decoding).
    {
      pk="$cli eval passkey --device webgpu --depths 0,0.25,0.5,0.75,1"
      step 120 $pk --lengths 4096,8192 --trials 10 --seed 7 --json "$out/passkey.json" --chart "$out/passkey.svg"
      step 100 $pk --lengths 8192 --trials 20 --seed 21 --attention dense,hip,streaming --json "$out/passkey-s21.json"
      step 100 $pk --lengths 8192 --trials 20 --seed 21 --haystack .evalsets/grover_cleveland.txt --attention dense,hip,streaming --json "$out/passkey-s21-grover.json"
    } 2>&1 | tee "$out/passkey.log"
    ;;
  sweep)
    # Why HiP misses passkeys at 8k (BENCHMARKS.md, evaluation): HiP only, one change at a time,
    # on the embedded haystack (seed 7) and, out of sample, on a held-out text (seed 11).
    {
      pk="$cli eval passkey --device webgpu --attention hip --lengths 8192 --depths 0,0.25,0.5,0.75,1 --trials 10"
      step 60 $pk --seed 7 --json "$out/sweep-default.json"
      step 60 $pk --seed 7 --last-token-decode --json "$out/sweep-last-token-decode.json"
      step 60 $pk --seed 7 --representative first --json "$out/sweep-representative-first.json"
      step 60 $pk --seed 7 --hip-block-size-q 32 --json "$out/sweep-bq32.json"
      step 60 $pk --seed 7 --hip-block-stride-q 1 --json "$out/sweep-bsq1.json"
      step 60 $pk --seed 11 --haystack .evalsets/grover_cleveland.txt --json "$out/sweep-grover-default.json"
      step 60 $pk --seed 11 --haystack .evalsets/grover_cleveland.txt --last-token-decode --json "$out/sweep-grover-last-token-decode.json"
    } 2>&1 | tee "$out/sweep.log"
    ;;
  sweep2)
    # More trials (20 per cell, fresh seed 21), both haystacks, dense as the reference on the same prompts.
    {
      pk="$cli eval passkey --device webgpu --lengths 8192 --depths 0,0.25,0.5,0.75,1 --trials 20 --seed 21"
      g="--haystack .evalsets/grover_cleveland.txt"
      step 80 $pk --attention dense,hip,streaming --json "$out/s2-embedded.json"
      step 60 $pk --attention hip --dtype f32 --json "$out/s2-embedded-f32.json"
      step 60 $pk --attention hip --hip-block-size-q 32 --json "$out/s2-embedded-bq32.json"
      step 80 $pk $g --attention dense,hip --json "$out/s2-grover.json"
      step 60 $pk $g --attention hip --dtype f32 --json "$out/s2-grover-f32.json"
      step 60 $pk $g --attention hip --hip-block-size-q 32 --json "$out/s2-grover-bq32.json"
      step 60 $pk $g --attention hip --hip-block-stride-q 1 --json "$out/s2-grover-bsq1.json"
    } 2>&1 | tee "$out/sweep2.log"
    ;;
  reps)
    # Representatives per half (--representative-blocks S): passkey at 8k on hip-testbed-mini,
    # both haystacks, seed 21 (20 per depth) and a fresh seed 33 (30 per depth) with dense on the
    # same prompts; then the mask-estimation cost on the H200 kernel benchmark.
    {
      tmp=$(mktemp -d)
      pk="$cli eval passkey --device webgpu --lengths 8192 --depths 0,0.25,0.5,0.75,1"
      g="--haystack .evalsets/grover_cleveland.txt"
      for S in 1 2 3 4; do
        step 60 $pk --trials 20 --seed 21 --attention hip --representative-blocks $S --json "$tmp/s21-embedded-S$S.json"
        step 60 $pk --trials 20 --seed 21 $g --attention hip --representative-blocks $S --json "$tmp/s21-grover-S$S.json"
      done
      step 90 $pk --trials 30 --seed 33 --attention dense,streaming --json "$tmp/s33-embedded-dense.json"
      step 90 $pk --trials 30 --seed 33 $g --attention dense,streaming --json "$tmp/s33-grover-dense.json"
      for S in 1 2 3 4; do
        step 60 $pk --trials 30 --seed 33 --attention hip --representative-blocks $S --json "$tmp/s33-embedded-S$S.json"
        step 60 $pk --trials 30 --seed 33 $g --attention hip --representative-blocks $S --json "$tmp/s33-grover-S$S.json"
      done
      merge_json "$tmp" "$out/reps-passkey.json"
      for S in 1 2 3; do
        step 120 $cli bench attention --methods hip --modes prefill --seq-lens 8192,32768,131072 --representative-blocks $S --json "$out/reps-bench-S$S.json"
      done
    } 2>&1 | tee "$out/reps.log"
    ;;
  m28)
    # hip-testbed-28m (56 MB: it travels xz-compressed in .m28/, on a host where an earlier call
    # left .gpu/): passkey at 8k, both haystacks, and perplexity at 8k, dense vs HiP.
    {
      mkdir -p /tmp/m28 && tar -xJf .m28/hip-testbed-28m.tar.xz -C /tmp/m28
      m="--model /tmp/m28/hip-testbed-28m"
      tmp=$(mktemp -d)
      pk="$cli eval passkey $m --device webgpu --lengths 8192 --depths 0,0.25,0.5,0.75,1 --trials 20 --seed 21"
      g="--haystack .evalsets/grover_cleveland.txt"
      step 120 $pk --attention dense,streaming --json "$tmp/m28-s21-embedded-dense.json"
      step 120 $pk $g --attention dense,streaming --json "$tmp/m28-s21-grover-dense.json"
      for S in ${M28_REPS:-1 2 3}; do
        step 90 $pk --attention hip --representative-blocks $S --json "$tmp/m28-s21-embedded-S$S.json"
        step 90 $pk $g --attention hip --representative-blocks $S --json "$tmp/m28-s21-grover-S$S.json"
      done
      merge_json "$tmp" "$out/m28-passkey.json"
      files=()
      for f in .evalsets/*.txt .evalsets/*.raw; do files+=(--file "$f"); done
      step 150 $cli eval ppl $m --device webgpu "${files[@]}" --context 8192 --max-windows 4 --attention dense,hip --json "$out/m28-ppl.json"
      step 150 $cli eval ppl $m --device webgpu "${files[@]}" --context 8192 --max-windows 4 --attention hip --representative-blocks ${M28_PPL_REPS:-2} --json "$out/m28-ppl-reps.json"
      step 150 $cli eval ppl --device webgpu "${files[@]}" --context 8192 --max-windows 4 --attention hip --representative-blocks ${M28_PPL_REPS:-2} --json "$out/mini-ppl-reps.json"
    } 2>&1 | tee "$out/m28.log"
    ;;
  m28final)
    # hip-testbed-28m with the defaults on a fresh seed (33, 30 per depth), both haystacks.
    {
      mkdir -p /tmp/m28 && tar -xJf .m28/hip-testbed-28m.tar.xz -C /tmp/m28
      pk="$cli eval passkey --model /tmp/m28/hip-testbed-28m --device webgpu --lengths 8192 --depths 0,0.25,0.5,0.75,1 --trials 30 --seed 33 --attention dense,hip,streaming"
      step 200 $pk --json "$out/m28-s33-embedded.json" --chart "$out/m28-s33-embedded.svg"
      step 200 $pk --haystack .evalsets/grover_cleveland.txt --json "$out/m28-s33-grover.json" --chart "$out/m28-s33-grover.svg"
    } 2>&1 | tee "$out/m28final.log"
    ;;
  m28decode)
    # hip-testbed-28m's remaining HiP misses (seed 33) are digits 3–5, i.e. decoded
    # between mask refreshes: HiP with refreshes every 1, 2, 4 steps (default 8) on those prompts.
    {
      mkdir -p /tmp/m28 && tar -xJf .m28/hip-testbed-28m.tar.xz -C /tmp/m28
      pk="$cli eval passkey --model /tmp/m28/hip-testbed-28m --device webgpu --lengths 8192 --depths 0,0.25,0.5,0.75,1 --trials 30 --seed 33 --attention hip"
      for r in 4 2 1; do
        step 90 $pk --refresh-interval $r --json "$out/m28-s33-embedded-rm$r.json"
        step 90 $pk --refresh-interval $r --haystack .evalsets/grover_cleveland.txt --json "$out/m28-s33-grover-rm$r.json"
      done
    } 2>&1 | tee "$out/m28decode.log"
    ;;
  shift)
    # Shifted blocks between decode refreshes (default on), hip-testbed-mini: the passkey stage's
    # runs with the new default, seed 33 as before, a fresh seed on another held-out text with
    # dense, HiP and HiP without shifted blocks; decode cost with and without.
    {
      mkdir -p "$out/j"
      pk="$cli eval passkey --device webgpu --lengths 8192 --depths 0,0.25,0.5,0.75,1"
      step 60 $pk --trials 30 --seed 33 --attention hip --json "$out/j/s33-embedded.json"
      step 60 $pk --trials 30 --seed 33 --attention hip --haystack .evalsets/grover_cleveland.txt --json "$out/j/s33-grover.json"
      step 100 $pk --trials 30 --seed 45 --attention dense,hip --haystack .evalsets/northanger_abbey.txt --json "$out/j/s45-northanger.json"
      step 60 $pk --trials 30 --seed 45 --attention hip --shifted-blocks off --haystack .evalsets/northanger_abbey.txt --json "$out/j/s45-northanger-noshift.json"
      step 90 $cli bench attention --methods dense,hip --modes decode --seq-lens 8192,32768,131072 --json "$out/j/decode-shift.json" --markdown "$out/decode-shift.md"
      step 60 $cli bench attention --methods hip --modes decode --seq-lens 8192,32768,131072 --shifted-blocks off --json "$out/j/decode-noshift.json"
      step 120 $cli eval passkey --device webgpu --depths 0,0.25,0.5,0.75,1 --lengths 4096,8192 --trials 10 --seed 7 --json "$out/j/passkey.json" --chart "$out/passkey.svg"
      step 100 $pk --trials 20 --seed 21 --json "$out/j/passkey-s21.json"
      step 100 $pk --trials 20 --seed 21 --haystack .evalsets/grover_cleveland.txt --json "$out/j/passkey-s21-grover.json"
      merge_json "$out/j" "$out/shift.json" && rm -r "$out/j"
    } 2>&1 | tee "$out/shift.log"
    ;;
  m28shift)
    # The same for hip-testbed-28m (host prepared by an earlier call, as m28).
    {
      mkdir -p /tmp/m28 "$out/j" && tar -xJf .m28/hip-testbed-28m.tar.xz -C /tmp/m28
      pk="$cli eval passkey --model /tmp/m28/hip-testbed-28m --device webgpu --lengths 8192 --depths 0,0.25,0.5,0.75,1 --trials 30"
      step 90 $pk --seed 33 --attention hip --json "$out/j/m28-s33-embedded.json"
      step 90 $pk --seed 33 --attention hip --haystack .evalsets/grover_cleveland.txt --json "$out/j/m28-s33-grover.json"
      step 200 $pk --seed 45 --attention dense,hip --haystack .evalsets/northanger_abbey.txt --json "$out/j/m28-s45-northanger.json"
      step 90 $pk --seed 45 --attention hip --shifted-blocks off --haystack .evalsets/northanger_abbey.txt --json "$out/j/m28-s45-northanger-noshift.json"
      merge_json "$out/j" "$out/m28shift.json" && rm -r "$out/j"
    } 2>&1 | tee "$out/m28shift.log"
    ;;
  shift2|m28shift2)
    # Shifted blocks with the sink shifted too: seed 33 and 45 again (HiP), and a fresh seed on
    # a third held-out text (dense and HiP); shift2: hip-testbed-mini, m28shift2: hip-testbed-28m.
    {
      mkdir -p "$out/j"
      model=()
      if [ "$stage" = m28shift2 ]; then
        mkdir -p /tmp/m28 && tar -xJf .m28/hip-testbed-28m.tar.xz -C /tmp/m28
        model=(--model /tmp/m28/hip-testbed-28m)
      fi
      pk="$cli eval passkey ${model[*]} --device webgpu --lengths 8192 --depths 0,0.25,0.5,0.75,1 --trials 30"
      step 90 $pk --seed 33 --attention hip --json "$out/j/$stage-s33-embedded.json"
      step 90 $pk --seed 33 --attention hip --haystack .evalsets/grover_cleveland.txt --json "$out/j/$stage-s33-grover.json"
      step 90 $pk --seed 45 --attention hip --haystack .evalsets/northanger_abbey.txt --json "$out/j/$stage-s45-northanger.json"
      step 200 $pk --seed 57 --attention dense,hip --haystack .evalsets/wikitext2_wiki.test.raw --json "$out/j/$stage-s57-wikitext.json"
      merge_json "$out/j" "$out/$stage.json" && rm -r "$out/j"
    } 2>&1 | tee "$out/$stage.log"
    ;;
  merge)
    # After a stage was cut short: merges the JSON files it left in OUTDIR/j.
    [ -d "$out/j" ] && merge_json "$out/j" "$out/merged.json" && rm -r "$out/j"
    ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
