"""The demo model is a real diffusers pipeline: its generated layouts are exactly the state dicts
diffusers' and transformers' classes build from the configs written beside them, diffusers loads
the folder as a StableDiffusionPipeline and runs it, and arrowquant.diffusers loads and runs its
quantized copy (the round-two trial: the demo's config did not match its tensors)."""

import os
import warnings

import numpy as np
import pytest

import arrowquant as aq
from arrowquant import demo

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")


def _diffusers_kwargs(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _state_layout(model) -> dict:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


@pytest.mark.parametrize("component", ["unet", "vae"])
def test_the_generated_layouts_are_what_diffusers_builds_from_the_configs(component):
    cls, config, layers = {
        "unet": (diffusers.UNet2DConditionModel, demo.unet_config(), demo.unet_layers),
        "vae": (diffusers.AutoencoderKL, demo.vae_config(), demo.vae_layers)}[component]
    assert dict(layers()) == _state_layout(cls(**_diffusers_kwargs(config)))


def test_the_text_encoder_layout_is_clips_under_its_saved_names():
    vocab_size = len(demo.clip_vocabulary())
    config = {k: v for k, v in demo.text_encoder_config(vocab_size).items() if k not in ("architectures", "model_type")}
    built = _state_layout(transformers.CLIPTextModel(transformers.CLIPTextConfig(**config)))
    # Checkpoints on the Hub (and older transformers) keep CLIPTextModel's "text_model." prefix.
    ours = {name.removeprefix("text_model."): shape for name, shape in demo.text_encoder_layers(vocab_size)}
    assert ours == built


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return demo.make_demo_model(tmp_path_factory.mktemp("demo") / "model")


def _image(pipe):
    return pipe("a red cat", num_inference_steps=2, height=32, width=32, generator=torch.Generator().manual_seed(0),
                output_type="np").images


def test_diffusers_loads_every_component_strictly_and_runs_the_pipeline(model):
    for folder, cls in (("unet", diffusers.UNet2DConditionModel), ("vae", diffusers.AutoencoderKL)):
        _, info = cls.from_pretrained(str(model / folder), output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], folder
    _, info = transformers.CLIPTextModel.from_pretrained(str(model / "text_encoder"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(model / "tokenizer"))
    ids = tokenizer("a photo, 2 cats!")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id and tokenizer.unk_token_id not in ids[1:-1]
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(model))
    image = _image(pipe)
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()


def test_the_quantized_demo_loads_through_arrowquant_diffusers_and_runs(model, tmp_path):
    import arrowquant.diffusers as ad
    import arrowquant.torch as at
    report = aq.quantize_diffusion_model(model, tmp_path / "q")
    assert set(report["components"]) == {"text_encoder", "unet", "vae"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # every tensor found under its name (no missing/unexpected)
        quantized = ad.load_pipeline(tmp_path / "q")
    assert type(quantized).__name__ == "StableDiffusionPipeline"
    for component in (quantized.unet, quantized.vae, quantized.text_encoder):
        assert any(isinstance(m, (at.QuantizedLinear, at.QuantizedConv2d)) for m in component.modules())
    float_image = _image(diffusers.StableDiffusionPipeline.from_pretrained(str(model)))
    packed_image = _image(quantized)
    assert packed_image.shape == float_image.shape and np.isfinite(packed_image).all()
    assert np.abs(packed_image - float_image).mean() < 0.1


def test_a_clip_checkpoint_with_the_text_model_prefix_loads_strictly(model, tmp_path):
    """Checkpoints on the Hub name CLIPTextModel's tensors text_model.*; transformers 5's model
    has no such prefix. load_quantized reconciles one leading part, in either direction."""
    import arrowquant.torch as at
    from arrowquant.torch.loading import checkpoint_names
    aq.quantize_diffusion_model(model / "text_encoder", tmp_path / "te")
    config = transformers.CLIPTextConfig.from_pretrained(str(model / "text_encoder"))
    reference = transformers.CLIPTextModel.from_pretrained(str(model / "text_encoder")).eval()
    packed = at.load_quantized(transformers.CLIPTextModel(config), tmp_path / "te" / "model.aq", strict=True).eval()
    ids = torch.tensor([[512, 70, 71, 513]])
    with torch.no_grad():
        a, b = reference(ids).last_hidden_state, packed(ids).last_hidden_state
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.98
    assert checkpoint_names({"a.w", "b.w"}, {"m.a.w", "m.b.w"}) == {"a.w": "m.a.w", "b.w": "m.b.w"}
    assert checkpoint_names({"m.a.w", "m.b.w"}, {"a.w", "b.w"}) == {"m.a.w": "a.w", "m.b.w": "b.w"}
    assert checkpoint_names({"a.w"}, {"a.w", "m.a.w"}) == {"a.w": "a.w"}  # names that match are never changed
    assert checkpoint_names({"a.w"}, {"x.w", "y.w"}) == {"a.w": "a.w"}  # no common part: reported as missing


def test_the_demo_command_refuses_a_model_folder_it_did_not_write_this_version(tmp_path, capsys):
    """An older demo (another layout) or a user's folder under --workdir is never written over."""
    from arrowquant.cli import main
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    assert main(["demo", "--workdir", str(tmp_path), "--quiet"]) == 1
    assert "is not this version's demo model" in capsys.readouterr().err
    assert (tmp_path / "model" / "model_index.json").read_text() == '{"_class_name": "StableDiffusionPipeline"}'
    assert demo.is_current_demo(demo.make_demo_model(tmp_path / "fresh"))
