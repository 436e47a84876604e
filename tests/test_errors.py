"""The helpers for one-line input errors."""

import warnings

import pytest

from ghibli_keras.errors import gist, warnings_only_if_it_works


def test_gist_is_one_line_with_the_line_a_colon_announces():
    assert gist(ValueError("first line\n\nsecond")) == "first line"
    assert gist(ValueError("17 objects could not be loaded. For <Conv2D>:\n\n'conv' expected 2\n"
                           "more")) == "17 objects could not be loaded. For <Conv2D>: 'conv' expected 2"
    assert gist(KeyError()) == "KeyError"


def test_warnings_are_shown_only_if_the_block_completes():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(OSError):
            with warnings_only_if_it_works():
                warnings.warn("skipping a layer")
                raise OSError("not the right file")
        assert not caught
        with warnings_only_if_it_works():
            warnings.warn("fine, but worth saying")
        assert [str(w.message) for w in caught] == ["fine, but worth saying"]
