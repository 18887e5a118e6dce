"""fixed_batches: the one way frames are cut into fixed-size, padded batches."""

import numpy as np
import pytest

from metatalk_jax.fixed_batches import index_batches, pad_to_batch


def test_index_batches_cover_every_frame_once_and_pad_with_the_last():
    batches = list(index_batches(11, 4))
    assert [real.tolist() for real, _ in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert [padded.tolist() for _, padded in batches] == [[0, 1, 2, 3], [4, 5, 6, 7],
                                                         [8, 9, 10, 10]]
    assert [len(p) for _, p in index_batches(8, 4)] == [4, 4]          # no padding needed
    assert list(index_batches(0, 4)) == []
    with pytest.raises(ValueError, match="positive"):
        list(index_batches(3, 0))


def test_pad_to_batch_repeats_the_last_row_of_any_array():
    rows = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(pad_to_batch(rows, 4), [[0, 1, 2], [3, 4, 5], [3, 4, 5],
                                                          [3, 4, 5]])
    np.testing.assert_array_equal(pad_to_batch([7], 3), [7, 7, 7])
    for bad in ([], [1, 2, 3]):
        with pytest.raises(ValueError, match="do not fit"):
            pad_to_batch(bad, 2)
