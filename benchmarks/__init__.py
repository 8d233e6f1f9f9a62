"""hubtl against plain hand-written loops, measured side by side: `python -m benchmarks --help`.

Every measurement compares hubtl with the code a user would write by hand for the same job, on the
same model, data, batch size and machine, and reports the ratio. Each side runs in its own fresh
subprocess (so peak memory and cold-start times are its own), sides alternate, warm-up is excluded,
and the median of the timed repetitions is reported. Nothing here is imported by the test suite
except through `python -m benchmarks --quick`, and no test asserts a time.

Groups (one module each): train_step, image_e2e, feature_cache, cold_start, predict, data_parallel, onnx_runtime,
distill_latency, fsdp, group_by_length.
"""

GROUPS = ("train_step", "image_e2e", "feature_cache", "cold_start", "predict", "data_parallel", "onnx_runtime", "distill_latency", "fsdp", "group_by_length")
