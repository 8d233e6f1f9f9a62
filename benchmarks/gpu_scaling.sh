#!/bin/bash
# The GPU checks of "past one machine" in one prepared run (about 5 minutes on an H100/H200), on the lent GPU machine:
#   run(command="bash benchmarks/gpu_scaling.sh", carry=[".whl", "benchmarks/.data"], timeout_s=480)
#  - JPEG → train with hubtl's DEFAULT DataLoader settings vs a hand-written ImageFolder loop (goal >= 0.95);
#  - the linear probe with and without the feature cache, hubtl's defaults (goal >= 5x), with the phase times;
#  - FSDP2 on one GPU vs a plain run of a transformers encoder: the same saved model format.
# Preparation (once, here) as for gpu.sh: .whl/ holds the wheels the GPU image lacks, benchmarks/.data/ the data.
python3 -c "import torch, accelerate, transformers, timm; print('torch', torch.__version__, 'accelerate', accelerate.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__)"
# what a training run imports beyond the image's packages: stop at once (seconds, not minutes) when one is missing
PYTHONPATH=/tmp/site python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && PYTHONPATH=/tmp/site python3 -c "import pydantic, matplotlib, jinja2, yaml, datasets, pandas, pyarrow, xxhash, dill" \
  || { echo "a package hubtl's training needs is missing on this machine: add its wheel to .whl/"; exit 3; }
BENCH_TIMEOUT="${BENCH_TIMEOUT:-420}" exec bash benchmarks/gpu.sh --only image_e2e,feature_cache.on_off,fsdp "$@"
