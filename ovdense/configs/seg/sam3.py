"""SAM 3 (Carion et al., Meta 2025) as a semantic segmentor: per class, every instance SAM 3
finds for each of the class's names, scored ``instance score x mask probability`` and
max-pooled per pixel (docs/methods.md#sam-3).

Needs the optional ``sam3`` package (``pip install "ovdense[sam3]"``) and the official weights,
which are gated (accept the SAM Licence at https://huggingface.co/facebook/sam3; the licence
applies to them) and read from the path you give::

    ovdense eval --config sam3 --dataset voc21 model.checkpoint=/path/sam3.pt

SAM 3 sees each image (or each ``window`` crop) resized to 1008 x 1008. The background class is
not prompted: a pixel no other class scores above 0 is background.
"""

from ovdense.config import LazyCall as L
from ovdense.sam.sam3 import SAM3Segmentor

model = L(SAM3Segmentor)(
    sam3=None,  # built from checkpoint; tests put L(tiny_sam3)() here
    checkpoint=None,
    score="instances",
    instance_thd=0.5,
    resolution=None,
    window=None,
    stride=None,
    phrase_batch=8,
    prompt_background=False,
    prob_thd=0.0,
    area_thd=None,
    background_index=None,  # the class named "background", if any
    precision="fp32",
    post_refiner=None,
)
