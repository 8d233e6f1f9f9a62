#!/bin/bash
# Run `python -m benchmarks --device cuda` on the lent GPU machine (the `run` device tool), e.g.
#   run(command="bash benchmarks/gpu.sh", carry=[".whl", "benchmarks/.data"], timeout_s=600)
#   run(command="bash benchmarks/gpu.sh --quick", ...)            # ~1-2 min smoke run
#   run(command="bash benchmarks/gpu.sh --mixed-precision bf16", ...)
# Needs, prepared here once (see benchmarks/README.md): the wheels the GPU image lacks in .whl/
# (datasets, dill, multiprocess, pydantic, pydantic_core, annotated-types, typing-inspection, xxhash, fsspec) and the data copied into benchmarks/.data/ (hymenoptera/, sst2/).
# Results come back as $OUT/results.json, $OUT/results.md, $OUT/run.log and $OUT/logs.tgz.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && python3 -m pip install -q --no-index --no-deps --no-build-isolation --upgrade --target /tmp/site . \
  && export PYTHONPATH=/tmp/site || exit 1
# The measured children import hubtl from this checkout (PYTHONPATH=repo); there `hubtl.model_cards` exists only
# through the installed package's mapping, so link it into the source tree of this device copy.
[ -n "$OUT" ] && [ ! -e hubtl/model_cards ] && ln -s ../model_cards hubtl/model_cards
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export PYTHONUNBUFFERED=1
start=$(date +%s)
# results are rewritten after every group, so a run stopped by the timeout still returns what it measured
timeout "${BENCH_TIMEOUT:-540}" python3 -m benchmarks --device cuda --out /tmp/bench "$@" > "$OUT/run.log" 2>&1
echo "benchmarks exited with $? after $(( $(date +%s) - start )) s"
tail -30 "$OUT/run.log"
cp /tmp/bench/results.json /tmp/bench/results.md "$OUT/" 2>/dev/null
tar czf "$OUT/logs.tgz" -C /tmp/bench logs 2>/dev/null
