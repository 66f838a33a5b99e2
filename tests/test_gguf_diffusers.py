"""diffusers loads what arrowquant.gguf writes and runs it: a UNet2DConditionModel built by diffusers
from a small config (fixed seed), saved, converted, loaded with from_single_file and
GGUFQuantizationConfig; its output is compared with the float32 model's, and the weights must
really stay quantized in memory (GGUFParameter)."""

import numpy as np
import pytest

import arrowquant.gguf as ag

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    torch.manual_seed(0)
    model = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(64, 128),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16)
    folder = tmp_path_factory.mktemp("diffusers") / "unet"
    model.save_pretrained(folder)
    return model.eval(), folder


@pytest.mark.parametrize("mix,floor", [("Q4_K_M", 0.99), ("IQ4_XS", 0.99), ("Q8_0", 0.9999)])
def test_diffusers_loads_and_runs_the_gguf(unet, tmp_path, mix, floor):
    from diffusers.quantizers.gguf.utils import GGUFParameter
    model, folder = unet
    report = ag.convert(folder, tmp_path / "unet.gguf", type=mix)
    assert report["components"]["model"]["architecture"] == "sd1"
    loaded = diffusers.UNet2DConditionModel.from_single_file(
        str(tmp_path / "unet.gguf"), config=str(folder),
        quantization_config=diffusers.GGUFQuantizationConfig(compute_dtype=torch.float32))
    quantized = [p for p in loaded.parameters() if isinstance(p, GGUFParameter)]
    assert len(quantized) >= 10  # the weights stay quantized in memory
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 16, generator=generator)
    text = torch.randn(2, 7, 64, generator=generator)
    with torch.no_grad():
        expected = model(x, torch.tensor([10, 500]), text).sample
        got = loaded(x, torch.tensor([10, 500]), text).sample
    cosine = torch.nn.functional.cosine_similarity(expected.flatten(), got.flatten(), dim=0).item()
    relative = (torch.linalg.norm(expected - got) / torch.linalg.norm(expected)).item()
    assert cosine >= floor and np.isfinite(relative)
