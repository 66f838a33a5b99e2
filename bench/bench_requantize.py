"""GGUF -> GGUF against llama-quantize: a llama model (transformers, random weights with a
Student-t(5) spread, fixed seed) written as an F16 GGUF, then quantized to Q4_K_M by llama.cpp's
`llama_model_quantize` (the llama-quantize tool's function, llama-cpp-python built from its sdist,
2 threads) and by arrowquant (method ggml and search, 2 threads), each the median of 3 runs in this
process, with the relative RMSE of all quantized tensors together against the F16 values, and
the cost of re-quantizing llama-quantize's Q8_0 file to Q4_K_M against converting the F16 file.

    python bench/bench_requantize.py [--quick] [--json out.json]
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from pathlib import Path

import numpy as np

from bench_common import bench_args, cpu_model, emit, median_seconds


def make_model(folder: Path, layers: int, hidden: int, ffn: int) -> Path:
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 50,
                           trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"],
                                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>")
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=ffn,
                                      num_hidden_layers=layers, num_attention_heads=hidden // 64,
                                      num_key_value_heads=hidden // 256, max_position_embeddings=256,
                                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:  # heavy-tailed, as trained weights are
                p.copy_(torch.from_numpy(rng.standard_t(5, tuple(p.shape)).astype(np.float32) * 0.02))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    import arrowquant.gguf as ag
    out = folder.parent / "model-F16.gguf"
    ag.convert(folder, out, type="F16")
    return out


def relative_rmse(source: Path, quantized: Path) -> float:
    import arrowquant.gguf as ag
    dd = xx = 0.0
    with ag.open(source) as s, ag.open(quantized) as q:
        for name, t in q.tensors.items():
            if not t.type.quantized:
                continue
            x = s.dequantize(name).astype(np.float64)
            d = q.dequantize(name) - x
            dd, xx = dd + float((d * d).sum()), xx + float((x * x).sum())
    return (dd / xx) ** 0.5


def main() -> None:
    args = bench_args(__doc__)
    import llama_cpp

    import arrowquant.gguf as ag
    repeats = 1 if args.quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shape = (2, 256, 512) if args.quick else (12, 1024, 2816)
        f16 = make_model(tmp / "model", *shape)

        def llama(src: Path, out: Path, ftype: int, allow: bool = False) -> None:
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype, params.nthread, params.allow_requantize = ftype, 2, allow
            assert llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params)) == 0

        def timed(fn) -> float:
            return median_seconds(fn, repeats, warmup=0)

        rows = {"llama_quantize": timed(lambda: llama(f16, tmp / "llama.gguf", 15)),
                "arrowquant_ggml": timed(lambda: ag.convert(f16, tmp / "ggml.gguf", type="Q4_K_M", method="ggml",
                                                            num_threads=2, with_stats=False, overwrite=True)),
                "arrowquant_search": timed(lambda: ag.convert(f16, tmp / "search.gguf", type="Q4_K_M",
                                                              num_threads=2, with_stats=False, overwrite=True))}
        errors = {key: relative_rmse(f16, tmp / name) for key, name in
                  (("llama_quantize", "llama.gguf"), ("arrowquant_ggml", "ggml.gguf"),
                   ("arrowquant_search", "search.gguf"))}
        llama(f16, tmp / "q8.gguf", 7)
        requant = timed(lambda: ag.convert(tmp / "q8.gguf", tmp / "q8-q4.gguf", type="Q4_K_M", num_threads=2,
                                           with_stats=False, overwrite=True, allow_requantize=True))
        result = {"cpu": cpu_model(), "cores": os.cpu_count(), "f16_gguf_mb": f16.stat().st_size / 1e6,
                  "seconds": rows, "relative_rmse": errors,
                  "speedup_vs_llama_quantize": {k: rows["llama_quantize"] / v for k, v in rows.items()},
                  "q8_0_to_q4_k_m_seconds": requant,
                  "q8_0_requantize_over_f16_convert": requant / rows["arrowquant_search"]}
        emit(result, args.json)


if __name__ == "__main__":
    main()
