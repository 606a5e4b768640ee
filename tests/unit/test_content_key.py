from gift_common.content_key import image_key

BASE = dict(
    model_fingerprint="f", prompt="a red circle", negative_prompt=None, seed=1,
    num_inference_steps=25, guidance_scale=7.5, height=32, width=32,
)  # fmt: skip


def test_key_is_stable_and_none_negative_equals_empty():
    assert image_key(**BASE) == image_key(**BASE)
    assert image_key(**BASE) == image_key(**{**BASE, "negative_prompt": ""})


def test_every_parameter_changes_the_key():
    changed = dict(
        model_fingerprint="g", prompt="a blue circle", negative_prompt="blurry", seed=2,
        num_inference_steps=24, guidance_scale=7.0, height=40, width=40,
    )  # fmt: skip
    for name, value in changed.items():
        assert image_key(**{**BASE, name: value}) != image_key(**BASE), name
