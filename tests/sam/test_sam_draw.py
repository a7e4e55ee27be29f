"""Instance overlays: class colours, outlines in the class colour, legend, empty input."""

import numpy as np
from sam_common import OBJECTS

from ovdense.sam import SamInstanceSegmenter, draw_instances
from ovdense.utils.labels import palette_for


def test_outlines_in_class_colours(shapes_segmentor, scene):
    inst = SamInstanceSegmenter(shapes_segmentor, nms_iou=None).classify_masks(
        scene.image, scene.masks, OBJECTS
    )
    vis = draw_instances(scene.image, inst, alpha=0.5, legend=False, text=False)
    assert vis.shape == scene.image.shape and vis.dtype == np.uint8
    pal = palette_for(OBJECTS)
    for k in range(len(inst)):
        colour = pal[inst.labels[k]]
        # the mask's top-left-most pixel lies on its outline: exactly the class colour
        # unless a better instance covers it
        ys, xs = np.nonzero(inst.masks[k])
        top = np.argmin(ys * 1000 + xs)
        y, x = ys[top], xs[top]
        if inst.label_map()[y, x] == inst.labels[k]:
            np.testing.assert_array_equal(vis[y, x], colour)
    outside = ~scene.masks.any(axis=0)
    np.testing.assert_array_equal(vis[outside], scene.image[outside])  # background untouched
    with_legend = draw_instances(scene.image, inst)
    assert with_legend.shape[0] >= 256 and with_legend.shape[1] > 256  # enlarged, legend panel


def test_no_instances_leave_the_image(shapes_segmentor, scene):
    inst = SamInstanceSegmenter(shapes_segmentor).classify_masks(
        scene.image, np.zeros((0, 128, 128), bool), OBJECTS
    )
    np.testing.assert_array_equal(draw_instances(scene.image, inst), scene.image)
