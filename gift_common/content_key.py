"""The identity of an image: everything that determines its pixels, hashed.

Two requests that agree on all of these get the same image, so the key is what the cache is indexed by.
The model is named by its fingerprint (a hash of its files), not only by its name, so that replacing the
weights behind a name never serves stale images.
"""

from __future__ import annotations

import hashlib
import json

from gift_common.schemas import JobRequest


def image_key(
    *,
    model_fingerprint: str,
    prompt: str,
    negative_prompt: str | None,
    seed: int,
    num_inference_steps: int,
    guidance_scale: float,
    height: int,
    width: int,
    adapter: str | None = None,
    adapter_scale: float = 1.0,
) -> str:
    """``adapter`` (an adapter's SHA-256) and its scale enter the key only when there is one: every key of a request
    without an adapter is the one it had before adapters existed."""
    named = {"adapter": adapter, "adapter_scale": repr(float(adapter_scale))} if adapter else {}
    canonical = json.dumps(
        {
            **named,
            "model": model_fingerprint,
            "prompt": prompt,
            "negative_prompt": negative_prompt or "",
            "seed": int(seed),
            "steps": int(num_inference_steps),
            "guidance": repr(float(guidance_scale)),
            "height": int(height),
            "width": int(width),
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def request_image_key(request: JobRequest, index: int, model_fingerprint: str, native_size: tuple[int, int]) -> str:
    """The key of image ``index`` of a job, the same for the API's lookup and the worker's: a size the request
    leaves open is the model's native (height, width)."""
    return image_key(
        model_fingerprint=model_fingerprint,
        prompt=request.prompts[index],
        negative_prompt=request.negative_prompt,
        seed=request.seed_of(index),
        num_inference_steps=request.num_inference_steps,
        guidance_scale=request.guidance_scale,
        height=request.height or native_size[0],
        width=request.width or native_size[1],
        adapter=request.adapter,
        adapter_scale=request.scale,
    )
