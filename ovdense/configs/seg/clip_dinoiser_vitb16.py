"""CLIP-DINOiser (Wysoczańska et al., ECCV 2024) on OpenCLIP ViT-B/16 (laion2b_s34b_b88k):
MaskCLIP features pooled with the correlations of a light head on block −3 (γ 0.2), background
where the top class probability is below δ 0.99 and the saliency head says "not salient"; short
side 448, 448/224 windows, position embeddings interpolated to the target size, softmax(100 cos).

The trained head is required: download ``last.pt`` from https://github.com/wysoczanska/
clip_dinoiser (``checkpoints/``) and set ``model.head_checkpoint=/path/last.pt`` (the file as
released, or converted by ``tools/convert_clip_dinoiser.py``). Without it the model refuses to
run.

``decode_order="paper"`` (default): the official evaluation's order, which reproduces the
published numbers: per window, softmax and the background rule at feature resolution, window
*probabilities* upsampled and averaged, then resized to the image. ``"ovdense"``: the
SCLIP-family order (cosines upsampled and averaged, softmax and the rule at full size). See
docs/clip_dinoiser_protocol.md.

The segmentor is a composition of parts (``CLIPDINOiserSegmentor`` only builds them, from the
one CLIP these keys describe): backbone ``CLIPDINOiserBackbone`` (MaskCLIP + block
``feature_block`` ``ln_2`` tokens as an intermediate), refiner ``CLIPDINOiserRefiner`` (the head
from ``head_checkpoint``: correlation pooling with ``gamma``, saliency map ``"background"``),
the cosine head, and the decoding rule ``SaliencyRule(delta)`` applied as ``background_rule``
says, in ``decode_order``. The keys stay flat so that benchmark settings
(``configs/eval/clip_dinoiser.py``) and ``model.key=value`` overrides reach every part.
"""

from ovdense.config import LazyCall as L
from ovdense.modeling.clip import load_clip
from ovdense.modeling.segmentors import CLIPDINOiserSegmentor

model = L(CLIPDINOiserSegmentor)(
    clip=L(load_clip)(model_name="ViT-B-16", pretrained="laion2b_s34b_b88k"),
    head_checkpoint=None,
    feature_block=-3,
    gamma=0.2,
    delta=0.99,
    background_rule=None,
    decode_order="paper",
    templates="openai_imagenet",
    short_side=448,
    max_long_side=2048,
    window=448,
    stride=224,
    window_batch_size=8,
    logit_scale=100.0,
    prob_thd=0.0,
    area_thd=None,
    background_index=None,  # the class named "background", if any
    pamr=None,
    precision="fp32",
    text_cache_dir=None,
)
