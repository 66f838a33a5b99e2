"""The layer under both containers: model folders and publishing (folders.py). Sources (safetensors,
FP8, pickles, GGUF) and sinks (.aq in checkpoint.py, GGUF in gguf/) sit on it."""
