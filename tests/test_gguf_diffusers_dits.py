"""diffusers loads and runs the GGUF files arrowquant writes for its transformer models: each model is
built by diffusers from a small config (fixed seed) and saved, converted with arrowquant.gguf, loaded
with `from_single_file(..., config=folder, quantization_config=GGUFQuantizationConfig(...))` and
run on the same inputs as the float model. (Wan's and HunyuanVideo's 5-D patch embeddings have no
GGUF form diffusers reads: ggml holds 4 dimensions and diffusers ignores comfy.gguf.orig_shape;
ComfyUI-GGUF reads it, see test_gguf_runtime_rules.py. Cosmos needs torchvision to run in
diffusers; its diffusers layout is checked by detection below.)"""

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


def ltx_video():
    return (diffusers.LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                                 num_attention_heads=4, attention_head_dim=64, cross_attention_dim=256,
                                                 num_layers=2, caption_channels=64),
            dict(hidden_states=torch.randn(1, 2 * 4 * 4, 8), encoder_hidden_states=torch.randn(1, 6, 64),
                 timestep=torch.tensor([10]), encoder_attention_mask=torch.ones(1, 6), num_frames=2, height=4, width=4))


def lumina2():
    return (diffusers.Lumina2Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, hidden_size=256,
                                                num_layers=2, num_refiner_layers=1, num_attention_heads=4, num_kv_heads=2,
                                                multiple_of=64, axes_dim_rope=(16, 24, 24), axes_lens=(64, 64, 64),
                                                cap_feat_dim=64),
            dict(hidden_states=torch.randn(1, 4, 8, 8), timestep=torch.tensor([0.5]),
                 encoder_hidden_states=torch.randn(1, 6, 64), encoder_attention_mask=torch.ones(1, 6, dtype=torch.bool)))


@pytest.mark.parametrize("build,arch", [(flux, "flux"), (sd3, "sd3"), (aura, "aura"), (qwen_image, "qwen_image"),
                                        (ltx_video, "ltxv"), (lumina2, "lumina2")])
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


def test_the_diffusers_layouts_of_the_video_transformers_are_recognised(tmp_path):
    """HunyuanVideo's diffusers layout has flux's norm_added_k too: it was taken for flux (and its
    input layers were quantized by flux's rules). Each is now its own architecture, its input,
    time, text and output layers kept in 16/32 bits."""
    cases = [
        (diffusers.HunyuanVideoTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2,
                                                  attention_head_dim=128, num_layers=1, num_single_layers=1,
                                                  num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=256,
                                                  pooled_projection_dim=256, rope_axes_dim=(32, 48, 48)),
         "hyvid", ["context_embedder.proj_in.weight", "time_text_embed.guidance_embedder.linear_2.weight",
                   "proj_out.weight"], "transformer_blocks.0.attn.to_q.weight"),
        (diffusers.CosmosTransformer3DModel(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=128,
                                            num_layers=2, mlp_ratio=2, text_embed_dim=256, adaln_lora_dim=64,
                                            max_size=(4, 16, 16), patch_size=(1, 2, 2)),
         "cosmos", ["patch_embed.proj.weight", "time_embed.t_embedder.linear_2.weight", "proj_out.weight"],
         "transformer_blocks.0.attn1.to_q.weight"),
        (diffusers.HiDreamImageTransformer2DModel(patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                                                  num_single_layers=1, attention_head_dim=128, num_attention_heads=2,
                                                  caption_channels=[256, 256], text_emb_dim=256, num_routed_experts=2,
                                                  num_activated_experts=1, axes_dims_rope=(32, 48, 48),
                                                  max_resolution=(32, 32), llama_layers=[0, 1]),
         "hidream", ["x_embedder.proj.weight", "caption_projection.0.linear.weight", "t_embedder.timestep_embedder.linear_2.weight"],
         "double_stream_blocks.0.block.attn1.to_q.weight"),
    ]
    for model, arch, kept, quantized in cases:
        model.save_pretrained(tmp_path / arch)
        report = ag.convert(tmp_path / arch, tmp_path / f"{arch}.gguf", type="Q4_K_M")
        tensors = report["components"]["model"]["tensors"]
        assert report["components"]["model"]["architecture"] == arch
        assert all(tensors[name]["type"] in ("F16", "F32") for name in kept), [(n, tensors[n]["type"]) for n in kept]
        assert tensors[quantized]["type"] not in ("F16", "F32")
