"""diffusers loads and runs the GGUF files arrowquant writes for its transformer models: each model is
built by diffusers from a small config (fixed seed) and saved, converted with arrowquant.gguf, loaded
with `from_single_file(..., config=folder, quantization_config=GGUFQuantizationConfig(...))` and
run on the same inputs as the float model. (Wan's 5-D patch embedding has no GGUF form diffusers
reads: ggml holds 4 dimensions and diffusers ignores comfy.gguf.orig_shape; ComfyUI-GGUF reads it,
see test_gguf_runtime_rules.py.)"""

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("gguf")

import arrowquant.gguf as ag  # noqa: E402


def flux():
    return (diffusers.FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                             attention_head_dim=64, num_attention_heads=4, joint_attention_dim=256,
                                             pooled_projection_dim=256, guidance_embeds=False, axes_dims_rope=(16, 24, 24)),
            dict(hidden_states=torch.randn(1, 64, 16), encoder_hidden_states=torch.randn(1, 8, 256),
                 pooled_projections=torch.randn(1, 256), timestep=torch.tensor([0.5]), img_ids=torch.zeros(64, 3),
                 txt_ids=torch.zeros(8, 3)))


def sd3():
    return (diffusers.SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=64,
                                            num_attention_heads=4, joint_attention_dim=256, caption_projection_dim=256,
                                            pooled_projection_dim=128, out_channels=4, pos_embed_max_size=16),
            dict(hidden_states=torch.randn(1, 4, 8, 8), encoder_hidden_states=torch.randn(1, 8, 256),
                 pooled_projections=torch.randn(1, 128), timestep=torch.tensor([10.0])))


def aura():
    return (diffusers.AuraFlowTransformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_mmdit_layers=4,
                                                 num_single_dit_layers=1, attention_head_dim=64, num_attention_heads=4,
                                                 joint_attention_dim=256, caption_projection_dim=256, out_channels=4,
                                                 pos_embed_max_size=64),
            dict(hidden_states=torch.randn(1, 4, 8, 8), encoder_hidden_states=torch.randn(1, 8, 256),
                 timestep=torch.tensor([10.0])))


def qwen_image():
    return (diffusers.QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                                  attention_head_dim=32, num_attention_heads=4, joint_attention_dim=256,
                                                  axes_dims_rope=(8, 12, 12)),
            dict(hidden_states=torch.randn(1, 16, 16), encoder_hidden_states=torch.randn(1, 8, 256),
                 encoder_hidden_states_mask=torch.ones(1, 8), timestep=torch.tensor([0.5]), img_shapes=[(1, 4, 4)]))


@pytest.mark.parametrize("build,arch", [(flux, "flux"), (sd3, "sd3"), (aura, "aura"), (qwen_image, "qwen_image")])
@pytest.mark.parametrize("mix,floor", [("Q8_0", 0.9999), ("Q4_K_M", 0.99), ("Q2_K", 0.9)])
def test_diffusers_loads_and_runs_the_transformer_gguf(tmp_path, build, arch, mix, floor):
    torch.manual_seed(0)
    model, inputs = build()
    model = model.eval()
    model.save_pretrained(tmp_path / "model")
    report = ag.convert(tmp_path / "model", tmp_path / "model.gguf", type=mix)
    assert report["components"]["model"]["architecture"] == arch
    loaded = type(model).from_single_file(str(tmp_path / "model.gguf"), config=str(tmp_path / "model"),
                                          quantization_config=diffusers.GGUFQuantizationConfig(compute_dtype=torch.float32),
                                          torch_dtype=torch.float32)
    with torch.no_grad():
        expected, got = model(**inputs).sample, loaded(**inputs).sample
    cosine = torch.nn.functional.cosine_similarity(expected.flatten(), got.flatten(), dim=0).item()
    assert cosine >= floor, cosine
