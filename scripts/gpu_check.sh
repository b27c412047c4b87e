#!/usr/bin/env bash
# The lent GPU's one command: a CUDA environment for scripts/gpu_check.py, built from files
# carried in .whl/, then the check. Two steps, on two machines:
#
#   scripts/gpu_check.sh --fetch     # here (internet: PyPI): .whl/ gets the wheels and mmcv's sdist
#   scripts/gpu_check.sh [OUT_DIR]   # on the GPU machine (carry .whl): builds, checks, writes
#                                    # OUT_DIR/gpu_check.json (default: $OUT, else reports/bench)
#
# The GPU machine (README, "Benchmarks") has Python 3.12, a CUDA build of torch, nvcc and no
# network, and none of mmcv / mmengine / mmdet: the pure-Python packages install from their
# wheels, and mmcv 2.1.0 (no wheel on PyPI) is built from its sdist with its CUDA ops, for the
# GPU's own architecture only. Two things mmcv 2.1's sources need that a recent torch wheel
# lacks are supplied, both outside mmcv's tree: `THC/THCAtomics.cuh` (removed from torch; the
# shim includes its ATen successor, `ATen/cuda/Atomic.cuh`) and, where the toolkit has no
# library headers (cusparse.h, cublas_v2.h, ...), the include folders of the nvidia-* wheels
# torch depends on. setuptools < 81 is carried: mmcv's setup.py imports pkg_resources.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHL=$ROOT/.whl
MMCV=2.1.0

if [[ "${1:-}" == "--fetch" ]]; then
  mkdir -p "$WHL"
  # what the check imports that the GPU machine lacks, at the versions .venv resolved here from
  # pyproject.toml's pins (one source of versions), as Python 3.12 wheels
  PINNED=$("$ROOT/.venv/bin/python" -c "
import importlib.metadata as md
names = ('addict mmdet mmengine prettytable wcwidth pycocotools shapely termcolor terminaltables yapf '
         'platformdirs jsonschema jsonschema-specifications referencing rpds-py pydot lvis').split()
print(' '.join(f'{n}=={md.version(n)}' for n in names))")
  # $PINNED unquoted: one argument per requirement
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHL" $PINNED setuptools==75.8.0
  # the sdist as published (its metadata step imports torch: no build isolation)
  "$ROOT/.venv/bin/pip" download --no-deps --no-binary :all: --no-build-isolation -d "$WHL" mmcv==$MMCV
  du -sh "$WHL"
  exit 0
fi

OUT_DIR=${1:-${OUT:-$ROOT/reports/bench}}
SITE=/tmp/seesaw_lvis_site
BUILD=/tmp/seesaw_lvis_mmcv
[[ -f "$WHL/mmcv-$MMCV.tar.gz" ]] || { echo "$WHL/mmcv-$MMCV.tar.gz missing: run scripts/gpu_check.sh --fetch here, carry .whl" >&2; exit 2; }
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch: nothing built')"
mkdir -p "$OUT_DIR"

t0=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL"/*.whl
export PYTHONPATH=$SITE:$ROOT/src

rm -rf "$BUILD" && mkdir -p "$BUILD/shim/THC"
tar xzf "$WHL/mmcv-$MMCV.tar.gz" -C "$BUILD"
TORCH_INC=$(python3 -c "from torch.utils.cpp_extension import include_paths; print(include_paths()[0])")
[[ -f "$TORCH_INC/THC/THCAtomics.cuh" ]] || echo '#include <ATen/cuda/Atomic.cuh>' > "$BUILD/shim/THC/THCAtomics.cuh"
NV_INC=$(python3 -c "
import glob, sys
print(':'.join(sorted({d for p in sys.path if p for d in glob.glob(p + '/nvidia/**/include', recursive=True)})))")
export CPATH=$BUILD/shim${NV_INC:+:$NV_INC}${CPATH:+:$CPATH}
ARCH=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
# torch builds in parallel only through ninja (else one file at a time: half an hour and more)
command -v ninja > /dev/null || export PATH=$(python3 -c "import os, sys; print(os.path.dirname(sys.executable))"):$PATH
command -v ninja > /dev/null || { echo "ninja not found: mmcv would build serially" >&2; exit 3; }
echo "installed wheels in $((SECONDS - t0)) s; building mmcv $MMCV for sm $ARCH with $(nproc) jobs"
if ! (cd "$BUILD/mmcv-$MMCV" && MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$ARCH MAX_JOBS=$(nproc) \
      python3 setup.py build_ext --inplace > "$OUT_DIR/mmcv_build.log" 2>&1); then
  grep -m 20 -i "error" "$OUT_DIR/mmcv_build.log" >&2 || tail -n 40 "$OUT_DIR/mmcv_build.log" >&2
  echo "mmcv build failed: $OUT_DIR/mmcv_build.log" >&2
  exit 3
fi
export PYTHONPATH=$BUILD/mmcv-$MMCV:$PYTHONPATH
echo "mmcv built: $((SECONDS - t0)) s since the wheels began"
cd "$ROOT"
python3 scripts/gpu_check.py --out "$OUT_DIR/gpu_check.json"
