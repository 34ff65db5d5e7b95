#!/usr/bin/env bash
# The GPU run in one call: every CUDA path, speed at the GPU patch, then ReIsoSeg against nnU-Net with the time left.
#
#   bash benchmarks/gpu_run.sh [--device cuda|cpu] [--minutes 9] [--tiny]
#
# Runs from the repository root with the machine's own python3 (and its torch). Wheels in .whl/ (made by
# benchmarks/gpu_wheels.py) are installed first with `pip --target` into a scratch folder on PYTHONPATH, so the
# script also runs on a machine without a registry. In this order, each step writing its result under $OUT
# (default .work/gpu_out) as soon as it has one, each cut off at its share of the --minutes deadline:
#   1. benchmarks/gpu_check.py             -> gpu_check.json: every CUDA path, fp16 peak memory against the estimate
#   2. benchmarks/speed.py at the GPU patch -> speed.json: training iterations/s and sliding-window voxels/s
#   3. benchmarks/quality.py, synth8 seed 0 -> quality.tar.gz: both networks side by side on the one GPU, equal
#      iterations at the GPU patch, as many as the measured speed fits into the time left, snapshots every 250
# run.log keeps everything printed, with the seconds since the start on each step's line.
# --device cpu with --tiny rehearses the whole script on a CPU (tiny patches, 250 iterations, windows without
# overlap when scoring): 11 minutes on 2 cores.
set -uo pipefail

device=cuda minutes=9 tiny=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=$2; shift 2 ;;
        --minutes) minutes=$2; shift 2 ;;
        --tiny) tiny=1; shift ;;
        -h | --help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$device" in cuda | cpu) ;; *) echo "gpu_run.sh: --device must be cuda or cpu, not '$device'" >&2; exit 2 ;; esac
[ -f benchmarks/quality.py ] || { echo "gpu_run.sh: run it from the repository root" >&2; exit 2; }

OUT=${OUT:-$PWD/.work/gpu_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
start=$(date +%s)
deadline=$((start + $(python3 -c "print(round(float('$minutes') * 60))")))
scratch=$(mktemp -d /tmp/reisoseg_gpu_run.XXXXXX)
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg

say() { echo "[gpu_run +$(($(date +%s) - start)) s] $*"; }
left() { echo $((deadline - $(date +%s))); }
share() { local seconds=$(($(left) * $1 / 100)); echo $((seconds > 10 ? seconds : 10)); }  # $1 % of the time left

if [ "$tiny" = 1 ]; then  # windows that do not overlap: scoring 8 x 32 x 32 windows at 0.5 takes minutes on a CPU
    check_patch="8 32 32" patch="8 32 32" repeats=2 step=1.0
else
    # nnU-Net v1's own 3d_fullres plan for the synth8 volumes (32 x 160 x 160 at 40 x 5 x 5 nm): the whole volume
    check_patch="32 192 192" patch="32 160 160" repeats=5 step=0.5
fi

if compgen -G ".whl/*.whl" > /dev/null; then
    say "installing $(ls .whl/*.whl | wc -l) wheels from .whl into $scratch/site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$scratch/site" .whl/*.whl \
        || { say "the wheels did not install"; exit 1; }
    export PYTHONPATH="$scratch/site${PYTHONPATH:+:$PYTHONPATH}" PATH="$scratch/site/bin:$PATH"
fi
python3 -c "import reisoseg, nnunet, torch; print('reisoseg', reisoseg.__version__, 'torch', torch.__version__, \
'CUDA', torch.version.cuda, 'GPU', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)" \
    || { say "reisoseg does not import: nothing was run"; exit 1; }
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
say "deadline in $(left) s; device $device, patch $patch"

status=0
say "1/3 gpu_check.py (at most $(share 35) s)"
timeout "$(share 35)" python3 benchmarks/gpu_check.py --device "$device" --work "$scratch/check" \
    --patch $check_patch --json "$OUT/gpu_check.json" || status=1
say "1/3 done"

say "2/3 speed.py at patch $patch (at most $(share 30) s)"
timeout "$(share 30)" python3 benchmarks/speed.py --device "$device" --ratio 8 --patch $patch --repeats "$repeats" \
    --output "$OUT/speed.json" || status=1
say "2/3 done"

quality=(python3 benchmarks/quality.py --datasets synth8 --seeds 0 --device "$device" --patch $patch
    --step_size "$step" --work "$scratch/quality" --results "$scratch/results")
say "3/3 quality.py: planning synth8"
timeout "$(share 40)" "${quality[@]}" --prepare_only || { say "planning failed"; exit 1; }
# Both runs share the machine: an iteration of each costs the sum of their measured steps, times 3.5 for data
# loading and nnU-Net's epochs (the rehearsals on 2 CPU cores needed 2.9x and 3.2x), less 90 s for starting the runs
# and scoring their snapshots; rounded down to the snapshot interval, at least one (one in a rehearsal).
fitting_iterations() {
    python3 - "$OUT/speed.json" "$(left)" <<'EOF'
import json, sys
rates = json.load(open(sys.argv[1]))["training_iterations_per_s"]
seconds_per_iteration = 3.5 * sum(1 / rate for rate in rates.values())
budget = int(sys.argv[2]) - 90
print(max(250, int(budget / seconds_per_iteration) // 250 * 250))
EOF
}
if [ "$tiny" = 1 ]; then
    iterations=250
else
    iterations=$(fitting_iterations) || iterations=250  # no speed measured: one snapshot interval
fi
say "3/3 quality.py: ReIsoSegTrainer and nnUNetTrainerV2EM side by side, $iterations iterations each"
data_workers=$(( $(nproc) / 2 > 1 ? $(nproc) / 2 - 1 : 1 ))
pids=()
for method in auto nnunet; do
    nnUNet_n_proc_DA=$data_workers timeout --kill-after=15 "$(($(left) - 30))" "${quality[@]}" --methods "$method" \
        --iterations "$iterations" > "$scratch/quality_$method.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
mkdir -p "$scratch/results"
"${quality[@]}" --report_only || status=1
for method in auto nnunet; do tail -n 2 "$scratch/quality_$method.log"; done
(cd "$scratch" && tar -czf "$OUT/quality.tar.gz" results quality_*.log $(find quality -name "training_log_*.txt"))
say "3/3 done -> $OUT/quality.tar.gz"
say "finished with status $status, $(left) s before the deadline"
exit $status
