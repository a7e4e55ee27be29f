"""Stage 2 of the shapes world's tiny CLIP: captions that name the background (a test/demo asset).

Stage 1 (``tiny_clip_shapes.py``) captions name the objects, and a quarter of them add
"on a <kind> background" — but the word "background" then never tells two scenes apart, so it
is not grounded: dense predictions never pick a "background" class. Real CLIPs ground
"background", "sky", "wall" because web captions name them, also for pictures with no object.
Stage 2 continues stage 1's weights for 500 iterations on fresh scenes (world seed 2,
held-out compositions still never shown) in which

* 15 % of the items are object-free scenes (:func:`ovdense.data.synthetic.generate_background`)
  captioned "a striped background." / "a photo of a striped background." / "a background.";
* half of the other captions are "<objects> on a <noisy|gradient|striped|checkered>
  background.", the rest name the objects only.

The shipped weights (``load_clip("ovdense-tiny-vit", "shapes")``) are stage 2's; reproduce
them on 2 CPU cores (README "Shapes world")::

    OMP_NUM_THREADS=1 python tools/train_tiny_clip.py   # stage 1 -> output/tiny_clip_shapes/
    OMP_NUM_THREADS=1 python tools/train_tiny_clip.py \\
        --config configs/train/tiny_clip_shapes_background.py
"""

from ovdense.config import LazyCall as L
from ovdense.data.synthetic import ShapesCaptionDataset
from ovdense.engine import WarmupCosine
from ovdense.modeling.clip import load_clip
from ovdense.modeling.contrastive import ContrastiveCLIP

from .tiny_clip_shapes import _BATCH, dataloader, optimizer, train

_MAX_ITER = 500
#: Stage 1's export (``tools/train_tiny_clip.py`` with the default config).
_STAGE1 = "output/tiny_clip_shapes/ovdense-tiny-vit_shapes.pt"

model = L(ContrastiveCLIP)(clip=L(load_clip)(model_name="ovdense-tiny-vit", checkpoint=_STAGE1))

dataloader["dataset"] = L(ShapesCaptionDataset)(
    length=_MAX_ITER * _BATCH,
    seed=2,
    size=64,
    split="train",
    empty_fraction=0.15,
    background_caption_fraction=0.5,
)

optimizer.lr = 2e-4  # a LazyCall

lr_scheduler = L(WarmupCosine)(max_iter=_MAX_ITER, warmup_iters=25, warmup_factor=0.01)

train["max_iter"] = _MAX_ITER
train["checkpoint_period"] = 100
train["output_dir"] = "output/tiny_clip_shapes_background"
