#!/usr/bin/env bash
# Rehearses benchmarks/gpu_run.sh on this CPU the way the GPU machine runs it: a copy of what travels there
# (`gpu_wheels.py --print_travelling`), a Python that holds torch and the GPU machine's image packages but not
# reisoseg, and the wheels of benchmarks/gpu_wheels.py (for this Python) in the copy's .whl/, installed by gpu_run.sh
# itself.
#
#   bash benchmarks/gpu_rehearsal.sh [--minutes 20]
#
# Needs the registry (the image's packages and the wheels are downloaded) and this repository's .venv (whose installed
# versions the wheels follow). Leaves everything under one scratch folder, which it names; exits with gpu_run.sh's
# status.
set -euo pipefail

minutes=20
case "${1:-}" in
    --minutes) minutes=$2 ;;
    -h | --help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "gpu_rehearsal.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac
root=$(git rev-parse --show-toplevel)
developer_python="$root/.venv/bin/python"
if [ ! -x "$developer_python" ]; then
    echo "gpu_rehearsal.sh: $developer_python not found: install the project first" >&2
    exit 2
fi
scratch=$(mktemp -d /tmp/reisoseg_gpu_rehearsal.XXXXXX)
echo "rehearsal in $scratch"
mkdir "$scratch/checkout"
"$developer_python" "$root/benchmarks/gpu_wheels.py" --print_travelling \
    | (cd "$root" && xargs -0 cp --parents -t "$scratch/checkout")
python3 -m venv "$scratch/image"
"$scratch/image/bin/python" -m pip install -q torch==2.13.0
"$scratch/image/bin/python" -m pip install -q torch==2.13.0 \
    $("$developer_python" "$root/benchmarks/gpu_wheels.py" --print_image)
python_version=$("$scratch/image/bin/python" -c "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')")
"$developer_python" "$root/benchmarks/gpu_wheels.py" --python "$python_version" --output "$scratch/checkout/.whl"
cd "$scratch/checkout"
env -u VIRTUAL_ENV -u PYTHONPATH PATH="$scratch/image/bin:$PATH" OUT="$scratch/out" \
    bash benchmarks/gpu_run.sh --device cpu --tiny --minutes "$minutes"
