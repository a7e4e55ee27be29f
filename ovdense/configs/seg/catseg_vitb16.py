"""CAT-Seg (Cho et al., CVPR 2024) on CLIP ViT-B/16: the trained cost-aggregation head in the
segmentor's ``head`` slot (a plain Segmentor), the official evaluation geometry: images at 640,
384-pixel windows 256 apart (a 24 x 24 grid each), class pooling 1, logit scale 1.

Needs the checkpoint of ``train/catseg_vitb16``::

    ovdense eval --config seg/catseg_vitb16 --dataset ade20k_150 \\
        model.checkpoint=output/catseg_vitb16/model_0080000.pt

Without one the head is random (shapes and speed only). Vocabularies of any size: the head
runs ``class_chunk`` classes at a time; above ``pad_len`` (256) classes each window decodes
the 256 of highest CLIP cost, as the official code does (ADE-847, PC-459).
"""

from ovdense.config import LazyCall as L
from ovdense.modeling.clip import load_clip
from ovdense.modeling.segmentors import build_catseg_segmentor

model = L(build_catseg_segmentor)(
    clip=L(load_clip)(model_name="ViT-B-16", pretrained="openai"),
    checkpoint=None,
    head_kwargs=dict(
        num_layers=2,
        hidden_dim=128,
        num_heads=4,
        window_size=12,
        pool_size=2,
        eval_pool_size=1,
        pad_len=256,
        guidance_dim=128,
        decoder_dims=(64, 32),
        decoder_guidance_dims=(256, 128),
        decoder_guidance_proj_dims=(32, 16),
        class_chunk=32,
    ),
    templates="catseg",
    short_side=640,
    max_long_side=2560,
    window=384,
    stride=256,
    window_batch_size=4,
    prob_thd=0.0,
    background_index=None,
    precision="fp32",
    text_cache_dir=None,
    post_refiner=None,
)
