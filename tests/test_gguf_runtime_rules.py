"""Every architecture arrowquant detects, written at every kind of mix, loads under ComfyUI-GGUF's
rules. ComfyUI is not on the package index, so its loader's rules are encoded here from its source
(loader.py `gguf_sd_loader`, ops.py `GGMLOps`) and applied with gguf-py reading the file:

- the loader views only F32 and F16 tensors in their real shape (`comfy.gguf.orig_shape.<name>`
  or the stored shape) and dequantizes 1-D BF16 tensors; every other tensor stays raw bytes;
- raw bytes are decoded on the fly only by the layers GGMLOps replaces: Linear, Conv2d, Embedding,
  LayerNorm, GroupNorm. A bare parameter or a Conv3d / Conv1d weight given raw bytes fails
  `load_state_dict` ("whose dimensions in the model are [1, 1024, 128] and whose dimensions in the
  checkpoint are [1, 1024, 256]", the failure users met with SD3's pos_embed and Wan's 5-D
  patch_embedding).

Each layout lists tensors under the architecture's real names with the kind of module that holds
them in ComfyUI's model code (comfy/ldm/...), which the policy never sees.
"""

import numpy as np
import pytest
from safetensors.numpy import save_file

import arrowquant.gguf as ag
from arrowquant.architectures import ARCHITECTURES, detect_architecture

gguf = pytest.importorskip("gguf")
ml_dtypes = pytest.importorskip("ml_dtypes")

D = 256
LINEAR, CONV2D, EMBEDDING, NORM, PARAM, CONV3D, CONV1D = "linear", "conv2d", "embedding", "norm", "param", "conv3d", "conv1d"
DECODED_ON_THE_FLY = {LINEAR, CONV2D, EMBEDDING, NORM}

LAYOUTS = {
    "flux": [("double_blocks.0.img_attn.proj.weight", (D, D), LINEAR), ("img_in.weight", (D, 64), LINEAR),
             ("txt_in.weight", (D, D), LINEAR), ("time_in.in_layer.weight", (D, D), LINEAR),
             ("double_blocks.0.img_mod.lin.weight", (6 * D, D), LINEAR),
             ("double_blocks.0.img_attn.norm.query_norm.scale", (64,), NORM),
             ("final_layer.linear.weight", (64, D), LINEAR)],
    "sd3": [("joint_blocks.0.x_block.attn.qkv.weight", (3 * D, D), LINEAR), ("pos_embed", (1, 64, D), PARAM),
            ("x_embedder.proj.weight", (D, 16, 2, 2), CONV2D), ("context_embedder.weight", (D, D), LINEAR),
            ("t_embedder.mlp.0.weight", (D, D), LINEAR), ("final_layer.linear.weight", (64, D), LINEAR)],
    "aura": [("double_layers.3.modX.1.weight", (6 * D, D), LINEAR), ("positional_encoding", (1, 64, D), PARAM),
             ("register_tokens", (1, 8, D), PARAM), ("init_x_linear.weight", (D, 64), LINEAR),
             ("double_layers.3.attn.w1q.weight", (D, D), LINEAR)],
    "hidream": [("caption_projection.0.linear.weight", (D, D), LINEAR),
                ("double_stream_blocks.0.block.ff_i.shared_experts.w3.weight", (D, D), LINEAR),
                ("double_stream_blocks.0.block.ff_i.gate.weight", (8, D), PARAM),  # MoEGate's bare Parameter
                ("double_stream_blocks.0.block.attn1.to_q.weight", (D, D), LINEAR)],
    "cosmos": [("blocks.0.mlp.layer1.weight", (4 * D, D), LINEAR),
               ("blocks.0.adaln_modulation_cross_attn.1.weight", (D, D), LINEAR),
               ("pos_embedder.pos_emb_h", (64, D), PARAM), ("x_embedder.proj.1.weight", (D, 64), LINEAR)],
    "ltxv": [("adaln_single.emb.timestep_embedder.linear_2.weight", (D, D), LINEAR),
             ("transformer_blocks.27.scale_shift_table", (6, D), PARAM),
             ("caption_projection.linear_2.weight", (D, D), LINEAR), ("scale_shift_table", (2, D), PARAM),
             ("patchify_proj.weight", (D, 128), LINEAR), ("transformer_blocks.27.attn1.to_q.weight", (D, D), LINEAR)],
    "hyvid": [("double_blocks.0.img_attn_proj.weight", (D, D), LINEAR),
              ("txt_in.individual_token_refiner.blocks.1.self_attn_qkv.weight", (3 * D, D), LINEAR),
              ("img_in.proj.weight", (D, 16, 1, 2, 2), CONV3D), ("double_blocks.0.img_mlp.fc2.weight", (D, 4 * D), LINEAR)],
    "wan": [("blocks.0.self_attn.norm_q.weight", (D,), NORM), ("text_embedding.2.weight", (D, D), LINEAR),
            ("head.modulation", (1, 2, D), PARAM), ("blocks.0.modulation", (1, 6, D), PARAM),
            ("patch_embedding.weight", (D, 16, 1, 2, 2), CONV3D), ("blocks.0.self_attn.q.weight", (D, D), LINEAR),
            ("blocks.0.ffn.2.weight", (D, 4 * D), LINEAR)],
    "sdxl": [("down_blocks.0.downsamplers.0.conv.weight", (D, D, 3, 3), CONV2D),
             ("add_embedding.linear_1.weight", (D, D), LINEAR), ("conv_in.weight", (D, 4, 3, 3), CONV2D),
             ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v.weight", (D, D), LINEAR),
             ("down_blocks.1.attentions.0.proj_in.weight", (D, D), LINEAR)],
    "sd1": [("down_blocks.0.downsamplers.0.conv.weight", (D, D, 3, 3), CONV2D),
            ("down_blocks.0.resnets.0.conv1.weight", (D, D, 1, 1), CONV2D),
            ("down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2.weight", (D, 4 * D), LINEAR),
            ("time_embedding.linear_1.weight", (D, D), LINEAR)],
    "lumina2": [("cap_embedder.1.weight", (D, D), LINEAR), ("context_refiner.0.attention.qkv.weight", (3 * D, D), LINEAR),
                ("x_pad_token", (1, 8 * D), PARAM), ("cap_pad_token", (1, 8 * D), PARAM),
                ("layers.0.feed_forward.w2.weight", (D, 4 * D), LINEAR)],
    "qwen_image": [("txt_norm.weight", (D,), NORM), ("transformer_blocks.0.img_mod.1.weight", (6 * D, D), LINEAR),
                   ("img_in.weight", (D, 64), LINEAR), ("transformer_blocks.0.attn.to_v.weight", (D, D), LINEAR)],
}
MIXES = ["Q2_K", "Q4_K_M", "Q8_0", "BF16", "F16"]


def test_every_detected_architecture_has_a_layout():
    assert set(LAYOUTS) == {a.name for a in ARCHITECTURES}
    for arch, layout in LAYOUTS.items():
        assert detect_architecture([name for name, _, _ in layout]).name == arch


def comfyui_gguf_load(path):
    """gguf_sd_loader and GGMLOps' rules: {name: (float32 array in the model's shape, type name)},
    or the error ComfyUI would raise for a tensor its module cannot take."""
    reader = gguf.GGUFReader(path)
    loaded = {}
    for tensor in reader.tensors:
        field = reader.get_field(f"comfy.gguf.orig_shape.{tensor.name}")
        if field is not None:
            assert field.types == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32]
            shape = tuple(int(field.parts[i][0]) for i in field.data)
        else:
            shape = tuple(int(v) for v in reversed(tensor.shape))
        qtype = tensor.tensor_type
        if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            values = np.asarray(tensor.data).reshape(shape).astype(np.float32)  # the loader's .view(*shape)
            loaded[tensor.name] = (values, qtype.name, True)
        else:  # raw bytes; only a GGMLOps layer (or the 1-D BF16 fix) decodes them
            values = gguf.quants.dequantize(tensor.data, qtype).reshape(shape)
            torch_ready = len(shape) <= 1 and qtype == gguf.GGMLQuantizationType.BF16
            loaded[tensor.name] = (values.astype(np.float32), qtype.name, torch_ready)
    return loaded


@pytest.fixture(scope="module", params=["BF16", "F16"])
def checkpoints(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"layouts-{request.param}")
    rng = np.random.default_rng(7)
    out = {}
    for arch, layout in LAYOUTS.items():
        tensors = {name: (rng.standard_normal(shape) * 0.05).astype(np.float32) for name, shape, _ in layout}
        dtype = ml_dtypes.bfloat16 if request.param == "BF16" else np.float16
        tensors = {name: value.astype(dtype) for name, value in tensors.items()}
        save_file(tensors, str(folder / f"{arch}.safetensors"))
        out[arch] = (folder / f"{arch}.safetensors", tensors)
    return request.param, out


@pytest.mark.parametrize("mix", MIXES)
def test_every_architecture_loads_under_comfyui_ggufs_rules(checkpoints, mix, tmp_path):
    source_dtype, by_arch = checkpoints
    for arch, layout in LAYOUTS.items():
        src, tensors = by_arch[arch]
        report = ag.convert(src, tmp_path / f"{arch}.gguf", type=mix)
        assert report["components"]["model"]["architecture"] == arch
        loaded = comfyui_gguf_load(tmp_path / f"{arch}.gguf")
        assert set(loaded) == set(tensors), arch
        for name, shape, kind in layout:
            values, qtype, torch_ready = loaded[name]
            where = f"{arch} {mix} from {source_dtype}: {name} ({kind}) stored as {qtype}"
            assert values.shape == shape, where
            if kind not in DECODED_ON_THE_FLY:
                assert torch_ready, f"{where}: ComfyUI's {kind} would be handed raw bytes"
                # ... and nothing is lost that the source had: F32 from BF16, F16 from F16.
                assert np.array_equal(values, tensors[name].astype(np.float32)), where
            source = tensors[name].astype(np.float32)
            cosine = float(np.dot(values.ravel(), source.ravel()) /
                           (np.linalg.norm(values) * np.linalg.norm(source)))
            assert cosine > (0.9 if mix == "Q2_K" else 0.99), where
