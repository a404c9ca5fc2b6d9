#!/usr/bin/env bash
# The first run on a GPU, in one command: does bench work there, and how fast is it?
#
#   benchmarks/gpu_check.sh --prepare [--python 3.12] [PACKAGE ...]
#       Here, with internet: download the project's dependencies other than torch (setup.cfg's
#       install_requires and theirs, or only the PACKAGEs named and theirs) as wheels for the GPU
#       machine's Python into benchmarks/wheelhouse/ (git-ignored), to carry along with the checkout.
#       A machine that already has most of them needs only the rest, e.g. (a torch image with pandas,
#       matplotlib, click, rich and filelock):  --prepare --python 3.12 sqlalchemy alembic tomli-w
#   benchmarks/gpu_check.sh
#       There, with a CUDA torch and nothing else: install the carried wheels (into .gpu-site/, on
#       PYTHONPATH; bench itself runs from the checkout), then
#         1. the smoke suite on the GPU with 1 and 2 jobs per device: wall time, report, check;
#         2. ResNet-20/56/110 at 50,000 synthetic images per epoch: images/s of the classic
#            DataLoader loop, the model-only ceiling and bench's train() at fp32, TF32, bf16,
#            channels_last, bf16+channels_last and + torch.compile; ratios to the classic loop,
#            input pipeline overhead, peak GPU memory (benchmarks/train_speed.py);
#         3. the projected wall time of suites/he2016_table.toml (50 jobs) from those figures.
#       About 6 minutes on an H100/H200 (it prints the time of each step and warns past 8).
#   benchmarks/gpu_check.sh --cpu
#       The same steps end to end on this machine's CPU at tiny sizes (a quick smoke run, 64 images
#       per epoch in batches of 32, fp32 and bf16+channels_last only): checks the script, not the speed.
#
# Environment: PYTHON (default python3; the one that holds the CUDA torch), WHEELS (default
# benchmarks/wheelhouse), OUT (default a new folder under /tmp) for the logs, databases and JSON.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
WHEELS="${WHEELS:-$ROOT/benchmarks/wheelhouse}"
SITE="$ROOT/.gpu-site"
export PYTHONUNBUFFERED=1

die() { echo "gpu_check: $*" >&2; exit 2; }

# setup.cfg's install_requires without torch, one per line (the GPU machine brings its own torch).
requirements() {
    "$PY" - "$ROOT/setup.cfg" <<'EOF'
import configparser, re, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
for line in cfg["options"]["install_requires"].strip().splitlines():
    line = line.split("#")[0].strip()
    if line and re.split(r"[<>=!~ \[;]", line)[0].lower() != "torch":
        print(line)
EOF
}

prepare() {
    local version
    version="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    if [[ "${1:-}" == "--python" ]]; then
        version="${2:?--python needs a version such as 3.12}"
        shift 2
    fi
    local packages=("$@")
    if [[ ${#packages[@]} -eq 0 ]]; then
        mapfile -t packages < <(requirements)
    fi
    mkdir -p "$WHEELS"
    echo "downloading wheels for CPython $version (manylinux x86-64) into $WHEELS: ${packages[*]}"
    # --only-binary: the GPU machine may have no compiler and no internet; manylinux tags as pip's
    # docs list them for a glibc >= 2.17 machine.
    "$PY" -m pip download --quiet --dest "$WHEELS" --only-binary=:all: --implementation cp \
        --python-version "$version" --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 "${packages[@]}"
    ls "$WHEELS"
    du -sh "$WHEELS"
    echo "carry benchmarks/wheelhouse/ with the checkout, then run benchmarks/gpu_check.sh there"
}

install_wheels() {
    shopt -s nullglob
    local wheels=("$WHEELS"/*.whl)
    shopt -u nullglob
    if [[ ${#wheels[@]} -gt 0 ]]; then
        echo "installing ${#wheels[@]} carried wheel(s) into $SITE"
        # Exactly the carried wheels, no index, no dependency resolution against what is installed:
        # the machine's torch and anything else it has stay as they are.
        "$PY" -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target "$SITE" "${wheels[@]}" \
            || die "pip could not install the wheels in $WHEELS: were they downloaded for this Python ($("$PY" -V))? (--prepare --python X.Y)"
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c "import benchmark.cli, benchmark.report.api, benchmark.runner.worker" 2>/dev/null || {
        "$PY" -c "import benchmark.cli, benchmark.report.api, benchmark.runner.worker" 2>&1 | tail -1 >&2
        die "a dependency is missing (above): run '$0 --prepare [--python X.Y] PACKAGE' where pip reaches PyPI and carry $WHEELS along"
    }
}

step_started=0
step() {
    step_started=$(date +%s)
    echo
    echo "=== $* ($(date -u +%H:%M:%S) UTC, $(( step_started - started )) s in)"
}
step_done() { echo "--- $(( $(date +%s) - step_started )) s"; }

run_check() {
    local mode="$1"
    started=$(date +%s)
    OUT="${OUT:-$(mktemp -d /tmp/bench-gpu-check.XXXXXX)}"
    mkdir -p "$OUT"
    cd "$ROOT"
    step "set-up ($mode), output in $OUT"
    install_wheels
    "$PY" - "$mode" <<'EOF'
import sys, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
if sys.argv[1] == "gpu":
    if not torch.cuda.is_available():
        sys.exit("gpu_check: torch sees no CUDA device (use --cpu for the dry run)")
    p = torch.cuda.get_device_properties(0)
    print(f"{torch.cuda.device_count()} GPU(s); cuda:0 {p.name}, {p.total_memory / 2**30:.0f} GiB, "
          f"compute capability {p.major}.{p.minor}, bf16 {torch.cuda.is_bf16_supported()}")
EOF
    bench() { "$PY" -m benchmark.cli "$@"; }
    local smoke_args speed_args
    if [[ "$mode" == "gpu" ]]; then
        smoke_args=(--devices cuda)
        speed_args=(--device cuda --images 50000 --rounds 1
                    --runtimes fp32 tf32 bf16 channels_last bf16+channels_last bf16+channels_last+compile)
    else
        smoke_args=(--devices cpu --quick --threads 1)
        speed_args=(--device cpu --images 64 --batch-size 32 --rounds 1 --threads 1
                    --runtimes fp32 bf16+channels_last)
    fi
    local suite=smoke
    [[ "$mode" == "cpu" ]] && suite=smoke-quick
    declare -A wall
    for per_device in 1 2; do
        step "smoke suite, $per_device job(s) per device"
        local flag=--jobs-per-device
        [[ "$mode" == "cpu" ]] && flag=--workers
        local t0 db="sqlite:///$OUT/smoke-$per_device.sqlite"
        t0=$(date +%s%N)
        bench run suites/smoke.toml --db "$db" --checkpoint-dir "$OUT/checkpoints-$per_device" "${smoke_args[@]}" \
            "$flag" "$per_device" 2>"$OUT/smoke-$per_device.log" || { tail -20 "$OUT/smoke-$per_device.log"; die "smoke run failed"; }
        wall[$per_device]=$(( ($(date +%s%N) - t0) / 1000000 ))  # ms
        bench report "$suite" --db "$db" --out "$OUT/report-$per_device" --no-figures
        sed -n '/^## Comparison/,/^## Curves/p' "$OUT/report-$per_device/$suite.md" | grep -v '^## Curves'
        if [[ "$mode" == "gpu" ]]; then  # a quick run is too short to be held to the expected values
            bench check "$suite" --db "$db" || echo "(bench check: something is out of the CPU reference's tolerance on this GPU; see above)"
        fi
        echo "smoke wall time, $per_device job(s) per device: $(( wall[$per_device] / 1000 )) s"
        step_done
    done
    "$PY" -c "import sys; a, b = int(sys.argv[1]) / 1000, int(sys.argv[2]) / 1000; \
print(f'\nsmoke: {a:.1f} s with 1 job per device, {b:.1f} s with 2 (x{a / b:.2f} throughput)')" "${wall[1]}" "${wall[2]}"

    step "ResNet-20/56/110: classic loop, ceiling and bench's train() per runtime"
    "$PY" benchmarks/train_speed.py "${speed_args[@]}" --models resnet20 resnet56 resnet110 \
        --project suites/he2016_table.toml --json "$OUT/train_speed.json" 2>"$OUT/train_speed.log" \
        || { tail -20 "$OUT/train_speed.log"; die "train_speed.py failed"; }
    step_done

    local total=$(( $(date +%s) - started ))
    echo
    echo "gpu_check ($mode) done in $total s; logs, databases, reports and train_speed.json in $OUT"
    if [[ "$mode" == "gpu" && $total -gt 480 ]]; then
        echo "warning: over the 8 minutes this check is meant to take"
    fi
}

case "${1:-}" in
    --prepare) shift; prepare "$@" ;;
    --cpu) run_check cpu ;;
    "") run_check gpu ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
    *) die "unknown argument '$1' (--prepare, --cpu, --help, or nothing for the GPU check)" ;;
esac
