"""How long to ask ZeroGPU for one comparison (`spaces.GPU(duration=gpu_duration)`).

ZeroGPU gives a function the GPU for `duration` seconds (60 by default) and ranks shorter requests higher in
its queue; a callable duration is called with the same arguments as the decorated function. One comparison
is two generations (unpruned and pruned) of up to IWP_MAX_NEW_TOKENS tokens. The allowance covers the first
call's one-off costs (the weights' first use on the real GPU, Triton's first compile of the PC-MMR kernels
for a new shape) plus the generations, which grow with the visual tokens: an image's pixels, a video's
sampled frames. The constants are deliberately generous: a duration too short kills the request.
"""
from __future__ import annotations

import os

from .inputs import MAX_PIXELS
from .video import MAX_FRAMES

BASE_S = 30.0            # start-up allowance of a call (first CUDA use, kernel compiles)
PER_MEGAPIXEL_S = 10.0   # both generations of a 1-megapixel image (up to ~7k visual tokens on OneVision anyres)
PER_FRAME_S = 3.0        # both generations, per sampled video frame
PER_TOKEN_S = 0.25       # decoding, per new token and run
MAX_S = 180.0


def gpu_duration(image=None, video=None, *args, **kwargs) -> int:
    """Seconds to request for compare(image, video, question, ...): from the input kind and size."""
    new_tokens = int(os.environ.get("IWP_MAX_NEW_TOKENS", "16"))
    seconds = BASE_S + 2 * new_tokens * PER_TOKEN_S
    if image is not None:
        seconds += PER_MEGAPIXEL_S * _megapixels(image)
    elif video:
        seconds += PER_FRAME_S * MAX_FRAMES
    return int(min(seconds, MAX_S))


def _megapixels(image) -> float:
    """Megapixels the model will see (the demo downscales to MAX_PIXELS); 1.0 when the file cannot be read
    here (the guards answer that later)."""
    try:
        from PIL import Image
        if isinstance(image, Image.Image):
            w, h = image.size
        else:
            with Image.open(image) as im:                # header only
                w, h = im.size
        return min(w * h, MAX_PIXELS) / 1e6
    except Exception:
        return MAX_PIXELS / 1e6
