#!/usr/bin/env python
"""Background handling in the shapes world (README "Background in the shapes world").

For each of ``--n`` generated val scenes (world seed 1, 128 px, indices 0..n-1: the
``shapes_seg`` generator) the vocabulary is a background class plus the scene's own objects;
prints, per background class and window setting, the % of background pixels labelled
background and the % of object pixels labelled with their own class. Not a test: run it with
``python tests/shapes/measure_background.py [--checkpoint FILE] [--n 300]`` (a few minutes).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import ovdense
from ovdense.data.synthetic import class_names, generate_scene

BACKGROUNDS = {
    "background": "background",
    "+ synonyms": "background|noisy background|striped background|gradient background|"
    "checkered background",
}
WINDOWS = {
    "preset": [],
    "256 px, 64/32 windows": ["model.short_side=256", "model.window=64", "model.stride=32"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="tiny CLIP weights (default: bundled)")
    p.add_argument("--preset", default="shapes/maskclip")
    p.add_argument("--n", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    names = class_names()
    kwargs = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    for wname, overrides in WINDOWS.items():
        pred = ovdense.Predictor(
            ovdense.build_segmentor(args.preset, overrides=overrides, device="cpu", **kwargs)
        )
        counts = {b: np.zeros(4, np.int64) for b in BACKGROUNDS}
        for i in range(args.n):
            scene = generate_scene(1, i, 128, "val")
            pred.set_image(scene.image)
            present = sorted(set(scene.labels.tolist()))
            to_world = np.array([0, *present])
            bg = scene.label == 0
            for b, bclass in BACKGROUNDS.items():
                out = pred.predict([bclass] + [names[c] for c in present], return_probs=False)
                world = to_world[np.asarray(out.labels)]
                obj = scene.label[~bg]
                counts[b] += [bg.sum(), (world[bg] == 0).sum(), obj.size, (world[~bg] == obj).sum()]
        for b, c in counts.items():
            print(
                f"{wname:24s} {b:12s} background {100 * c[1] / c[0]:5.1f} %  "
                f"objects {100 * c[3] / c[2]:5.1f} %"
            )


if __name__ == "__main__":
    main()
