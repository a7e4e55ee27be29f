"""One palette for demo, evaluation and visualizer: stable per class name, perceptually
spaced, "background" a fixed grey; overlays of small images upscaled for a legible legend."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdense.utils import labels as labels_mod
from ovdense.utils.labels import (
    BACKGROUND_COLOR,
    color_for_name,
    load_label_png,
    palette_for,
    save_label_png,
)
from ovdense.utils.visualizer import colorize, make_palette, overlay


def oklab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (0-255) -> OKLab, written out here independently of the library (Ottosson 2020)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    r, g, b = lin[..., 0], lin[..., 1], lin[..., 2]
    l_ = np.cbrt(0.4122214708 * r + 0.5363325363 * g + 0.0514459929 * b)
    m_ = np.cbrt(0.2119034982 * r + 0.6806995451 * g + 0.1073969566 * b)
    s_ = np.cbrt(0.0883024619 * r + 0.2817188376 * g + 0.6299787005 * b)
    return np.stack(
        [
            0.2104542553 * l_ + 0.7936177850 * m_ - 0.0040720468 * s_,
            1.9779984951 * l_ - 2.4285922050 * m_ + 0.4505937099 * s_,
            0.0259040371 * l_ + 0.7827717662 * m_ - 0.8086757660 * s_,
        ],
        axis=-1,
    )


def min_pairwise_distance(palette: np.ndarray) -> float:
    lab = oklab(palette)
    d = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return float(d.min())


VOC = (
    "aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike "
    "person pottedplant sheep sofa train tvmonitor"
).split()


def test_oklab_reference_values() -> None:
    np.testing.assert_allclose(oklab(np.array([255, 255, 255])), [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(oklab(np.array([255, 0, 0])), [0.62796, 0.22486, 0.12585], atol=1e-4)


def test_color_for_name_is_stable_and_ignores_case_and_spaces() -> None:
    assert color_for_name("dog") == color_for_name("Dog") == color_for_name("  DOG ")
    assert color_for_name("background") == color_for_name("Background") == BACKGROUND_COLOR
    assert color_for_name("dog") != color_for_name("cat")
    assert all(isinstance(v, int) and 0 <= v <= 255 for v in color_for_name("狗"))


def test_same_name_same_colour_across_vocabularies() -> None:
    a = palette_for(["dog", "cat", "sky"])
    b = palette_for(["cat", "sky", "road", "dog"])
    for name, row_a, row_b in (("dog", 0, 3), ("cat", 1, 0), ("sky", 2, 1)):
        assert a[row_a].tolist() == b[row_b].tolist() == list(color_for_name(name)), name
    # The first name of any vocabulary always gets its own colour.
    for name in VOC:
        assert tuple(palette_for([name, *VOC])[0].tolist()) == color_for_name(name)


@pytest.mark.parametrize("names", [VOC, VOC[::-1], [f"class {i}" for i in range(30)]])
def test_a_name_moves_only_for_an_earlier_close_colour(names: list[str]) -> None:
    """The documented rule: row i is color_for_name(names[i]) unless that colour is closer than
    0.1 (OKLab) to the colour of an earlier row; a moved row is >= 0.1 from all earlier rows."""
    pal = palette_for(names)
    for i, name in enumerate(names):
        home = np.array(color_for_name(name))
        clash = i > 0 and float(np.linalg.norm(oklab(pal[:i]) - oklab(home), axis=-1).min()) < 0.1
        if not clash:
            assert tuple(pal[i].tolist()) == color_for_name(name), name
        else:
            assert np.linalg.norm(oklab(pal[:i]) - oklab(pal[i]), axis=-1).min() >= 0.1


def test_appending_names_keeps_the_earlier_colours() -> None:
    names = [*VOC, "sky", "road", "tree", "grass"]
    full = palette_for(names)
    for k in (1, 5, 20):
        np.testing.assert_array_equal(palette_for(names[:k]), full[:k])


@pytest.mark.parametrize("where", [0, 5, 20])
def test_adding_background_does_not_recolour_the_others(where: int) -> None:
    base = palette_for(VOC)
    names = [*VOC[:where], "background", *VOC[where:]]
    with_bg = palette_for(names)
    assert tuple(with_bg[where].tolist()) == BACKGROUND_COLOR
    np.testing.assert_array_equal(np.delete(with_bg, where, axis=0), base)


def test_thirty_names_are_perceptually_distinct() -> None:
    """Stated minimum: OKLab distance >= 0.1 between any two of 30 classes (about 10x a
    just-noticeable difference), and >= 0.1 from the background grey, black and white."""
    vocabularies = [
        [f"class {i}" for i in range(30)],
        [
            *VOC,
            "sky",
            "road",
            "tree",
            "grass",
            "building",
            "wall",
            "water",
            "floor",
            "ceiling",
            "door",
        ],
        [f"{w}{i}" for w, i in zip(itertools.cycle(["obj", "thing", "stuff"]), range(30))],
    ]
    fixed = np.array([BACKGROUND_COLOR, (0, 0, 0), (255, 255, 255)], dtype=np.uint8)
    for names in vocabularies:
        pal = palette_for(names)
        assert pal.shape == (30, 3) and pal.dtype == np.uint8
        assert min_pairwise_distance(pal) >= 0.1
        assert min_pairwise_distance(np.concatenate([pal, fixed])) >= 0.1
        np.testing.assert_array_equal(pal, palette_for(names))  # deterministic


def test_collision_moves_the_later_name_only() -> None:
    n_slots = len(labels_mod._slots()[0])

    def home(name: str) -> int:
        key = name.strip().casefold().encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % n_slots

    seen: dict[int, str] = {}
    for i in itertools.count():
        name = f"n{i}"
        if home(name) in seen:
            first, second = seen[home(name)], name
            break
        seen[home(name)] = name
    assert color_for_name(first) == color_for_name(second)  # same slot on their own
    pal = palette_for([first, second])
    assert tuple(pal[0].tolist()) == color_for_name(first)
    assert tuple(pal[1].tolist()) != color_for_name(second)
    assert min_pairwise_distance(pal) >= 0.1
    swapped = palette_for([second, first])
    assert tuple(swapped[0].tolist()) == color_for_name(second)


def test_duplicates_large_vocabularies_and_empty() -> None:
    pal = palette_for(["dog", "cat", "Dog"])
    assert pal[0].tolist() == pal[2].tolist()
    assert palette_for([]).shape == (0, 3)
    big = palette_for([f"c{i}" for i in range(1000)])
    assert len({tuple(c) for c in big.tolist()}) == 1000
    assert (big.max(axis=1) > 0).all()


def test_label_png_with_class_names_uses_the_shared_palette(tmp_path: Path) -> None:
    names = ["background", "dog", "cat"]
    lab = np.array([[0, 1, 2, 255]])
    save_label_png(lab, tmp_path / "n.png", class_names=names)
    with Image.open(tmp_path / "n.png") as im:
        rgb = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(rgb, colorize(lab, palette_for(names)))
    np.testing.assert_array_equal(load_label_png(tmp_path / "n.png"), lab)
    # Without names: the old index palette, byte for byte the same file as before.
    save_label_png(lab, tmp_path / "a.png")
    save_label_png(lab, tmp_path / "b.png", palette=np.vstack([make_palette(255), [[0, 0, 0]]]))
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    with pytest.raises(ValueError, match="not both"):
        save_label_png(lab, tmp_path / "x.png", palette=make_palette(3), class_names=names)


def test_overlay_of_small_image_is_upscaled_with_palette_colours() -> None:
    names = ["background", "dog", "cat", "unused"]
    image = np.full((30, 40, 3), 120, dtype=np.uint8)
    lab = np.zeros((30, 40), dtype=np.int64)
    lab[:, 20:] = 1
    lab[20:, :10] = 2
    out = overlay(image, lab, names, alpha=1.0)
    # short side 30 < 256: factor ceil(256 / 30) = 9 -> 270 x 360, legend to the right
    assert out.shape[0] >= 270 and out.shape[1] > 360
    pal = palette_for(names)
    np.testing.assert_array_equal(
        out[:270, :360], colorize(np.kron(lab, np.ones((9, 9), int)), pal)
    )
    colours = {tuple(c) for c in out[:, 360:].reshape(-1, 3).tolist()}
    for present in (0, 1, 2):
        assert tuple(pal[present].tolist()) in colours
    assert tuple(pal[3].tolist()) not in colours
    # No legend, or a large enough image: no upscaling.
    assert overlay(image, lab, names, legend=False).shape == (30, 40, 3)
    assert overlay(image, lab, names, min_side=0).shape[0] < 270
    big = np.zeros((256, 300, 3), dtype=np.uint8)
    assert overlay(big, np.zeros((256, 300), int), names).shape[0] == 256


def test_upscaling_keeps_the_long_side_bounded() -> None:
    out = overlay(np.zeros((2, 3000, 3), np.uint8), np.zeros((2, 3000), int), ["a"], alpha=1.0)
    assert out.shape[0] < 300 and out.shape[1] < 4096 + 600  # factor 1: 3000 * 2 > 4096
