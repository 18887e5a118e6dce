"""prepare's previews a person can read: the overlay has a legend and is at least 256 px tall;
the error plot spans the video's frames and shades the excluded ranges, with a legend.
Positions are computed here from the plot's documented geometry (70 px left margin, 20 px
right, frames spread evenly)."""

from __future__ import annotations

import numpy as np

from metatalk_jax.subject.previews import (EXCLUDED_COLOURS, FITTED_COLOUR, TRACKED_COLOUR,
                                           error_plot, overlay_frame)


def test_overlay_is_tall_enough_and_has_a_legend():
    frame = np.full((144, 176, 3), 128, np.uint8)
    tracked = np.array([[40.5, 50.5]] * 68, np.float32)
    fitted = np.array([[120.5, 90.5]] * 68, np.float32)
    r = 32
    render = np.zeros((r, r, 3), np.float32)
    alpha = np.zeros((r, r), np.float32)
    matrix = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    out = overlay_frame(frame, render, alpha, matrix, tracked, fitted)
    scale = 3                                    # ceil(432 / 144)
    legend = out.shape[0] - 144 * scale
    assert out.shape[0] >= 256 and out.shape[1] == 176 * scale and legend > 0
    body, band = out[legend:], out[:legend]
    assert tuple(body[int(50.5 * scale), int(40.5 * scale)]) == TRACKED_COLOUR
    assert tuple(body[int(90.5 * scale), int(120.5 * scale)]) == FITTED_COLOUR
    for colour in (TRACKED_COLOUR, FITTED_COLOUR):       # the legend shows both markers
        assert np.all(band == colour, axis=-1).sum() > 20
    assert (band < 50).all(axis=-1).sum() > 100          # and its (black) text


def test_error_plot_shades_the_excluded_ranges_and_breaks_the_line():
    kept = np.r_[0:40, 60:95]
    values = np.where(kept < 40, 1.0, 3.0)        # away from the dashed mean line
    excluded = {"other_person": [(40, 59)], "no_face": [(95, 99)]}
    plot = error_plot({"error": values}, x=kept, total=100, excluded=excluded, width=600,
                      title="t")
    left, right = 70, 600 - 20

    def column(frame):                 # the x pixel of a frame's centre
        return int(left + (frame + 0.5) * (right - left) / 100)

    other = np.all(plot == EXCLUDED_COLOURS["other_person"], axis=-1)
    grey = np.all(plot == EXCLUDED_COLOURS["no_face"], axis=-1)
    assert other[:, column(50)].sum() > 100 and not other[:, column(20)].any()
    assert grey[:, column(97)].sum() > 100 and not grey[:, column(50)].any()
    blue = (plot[..., 2] > 150) & (plot[..., 0] < 120)     # the curve's colour, antialiased
    assert blue[:, column(20)].any() and blue[:, column(70)].any()
    assert not blue[:, column(50)].any()                # no line drawn across frames 40-59
    # The legend under the title names both reasons (their colours appear there).
    head = plot[30:60]
    assert np.all(head == EXCLUDED_COLOURS["other_person"], axis=-1).any()
    assert np.all(head == EXCLUDED_COLOURS["no_face"], axis=-1).any()


def assert_labelled_preview(image, examples: int, height: int, width: int, *, columns: int):
    """A training preview of `examples` stacked [height, width] examples: each enlarged by a
    whole factor to >= 256 px (nearest: the factor-square blocks are uniform) under a label
    band with text over each of its `columns` columns."""
    factor = -(-256 // height)
    band = image.shape[0] - examples * height * factor
    assert image.shape[1:] == (width * factor, 3) and 18 <= band <= 40, image.shape
    body = image[band:]
    np.testing.assert_array_equal(body, np.repeat(np.repeat(body[::factor, ::factor], factor, 0),
                                                  factor, 1))
    step = image.shape[1] // columns
    assert all(image[:band, k * step:(k + 1) * step].max() > 150 for k in range(columns))


def test_labelled_columns_name_each_column_and_keep_even_heights():
    from metatalk_jax.media.labelled_images import enlarge_to, label_columns
    image = np.random.default_rng(0).integers(0, 256, (2 * 32, 3 * 32, 3), dtype=np.uint8)
    big = enlarge_to(image, 256, rows=2)
    assert big.shape == (2 * 256, 3 * 256, 3)                  # 32 px -> factor 8
    labelled = label_columns(big, ("render", "generated", "real"))
    assert_labelled_preview(labelled, 2, 32, 96, columns=3)
    assert labelled.shape[0] % 2 == 0
    np.testing.assert_array_equal(labelled[-big.shape[0]:], big)
    blank = label_columns(big, ("render", "", "real"))         # a missing label shows
    step = big.shape[1] // 3
    assert blank[: blank.shape[0] - big.shape[0], step:2 * step].max() == 0
    assert enlarge_to(image, 20, rows=2) is image               # tall enough: unchanged
