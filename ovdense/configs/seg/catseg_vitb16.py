"""CAT-Seg (Cho et al., CVPR 2024) on CLIP ViT-B/16: the trained cost-aggregation head in the
segmentor's ``head`` slot (a plain Segmentor) with the official evaluation of ``eval.sh``
(``CATSeg.inference_sliding_window``): the image resized to 640 x 640, four 384-pixel windows
256 apart plus the whole image at 384, the prompt "A photo of a {} in the scene", sigmoid
probabilities averaged over the windows and 1:1 with the whole image, class pooling 1.

The released weights (KU-CVLAB/CAT-Seg's ``model_final.pth`` of the ViT-B/16 model, a
detectron2 checkpoint holding the fine-tuned CLIP too) load by path, nothing else downloaded::

    ovdense eval --config seg/catseg_vitb16 --dataset ade20k_150 \\
        model.checkpoint=model_final_base.pth

A checkpoint of ``train/catseg_vitb16`` loads the same way (its CLIP starts from OpenAI's
weights, downloaded by open_clip). Without a checkpoint the head is random (shapes and speed
only). Vocabularies of any size: the head runs ``class_chunk`` classes at a time; above
``pad_len`` (256) classes each window decodes the 256 of highest CLIP cost, as the official
code does (ADE-847, PC-459).
"""

from ovdense.config import LazyCall as L
from ovdense.modeling.segmentors import build_catseg_segmentor

model = L(build_catseg_segmentor)(
    clip=None,  # built from clip_model (the official checkpoint holds every CLIP tensor)
    clip_model="ViT-B-16",
    clip_pretrained="openai",  # only without an official checkpoint
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
    fixed_size=640,
    short_side=640,  # unused with fixed_size (ovdense's older geometry: fixed_size=None)
    max_long_side=2560,
    window=384,
    stride=256,
    global_view=True,
    crop_resize=None,
    decode_order="sigmoid",
    window_batch_size=5,
    prob_thd=0.0,
    background_index=None,
    precision="fp32",
    text_cache_dir=None,
    post_refiner=None,
)
