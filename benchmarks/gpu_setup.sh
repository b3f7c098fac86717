# Sourced by the GPU check scripts (gpu_check.sh, gpu_scale_check.sh) on a machine with a CUDA GPU whose python3
# holds torch: makes OUT ($1, default /tmp/ehrdx_gpu), installs the wheels in .whl/ (packages the machine lacks:
# polars, lightgbm) when that folder exists, puts src/ first on the path, and prints the GPU and versions.
out=${1:-/tmp/ehrdx_gpu}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, polars; print('torch', torch.__version__, 'polars', polars.__version__, 'cuda', torch.cuda.is_available())" || exit 1
