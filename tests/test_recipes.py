"""The tasks' recipes and how training data is cut for them."""
import numpy as np
import pytest
import torch

from bench.config import ConfigError
from bench.registry import get_task_class, task_names
from tasks.vad import CRNN, cut_clips


def test_cut_clips_keeps_each_frame_with_its_label():
    n_clips, samples = 3, 32000
    audio = np.arange(n_clips * samples, dtype=np.int64).reshape(n_clips, samples)
    frames = samples // 160 + 1
    labels = (np.arange(n_clips * frames).reshape(n_clips, frames) % 2).astype(np.uint8)
    pieces, piece_labels = cut_clips(audio, labels, 0.5)
    assert pieces.shape == (12, 8000) and piece_labels.shape == (12, 51)
    for clip in range(n_clips):
        for k in range(4):
            row = 4 * clip + k
            # piece k starts at sample 8000 k, and its frame j is the clip's frame 50 k + j
            assert pieces[row, 0] == audio[clip, 8000 * k] and pieces[row, -1] == audio[clip, 8000 * k + 7999]
            assert np.array_equal(piece_labels[row], labels[clip, 50 * k : 50 * k + 51])
    # The model gives one output per label of a piece.
    assert CRNN(8, 4, 4, 4, 4)(torch.zeros(1, 8000)).shape == (1, 51)


def test_cut_clips_whole_clips_and_bad_lengths():
    audio, labels = np.zeros((2, 16000), np.int16), np.zeros((2, 101), np.uint8)
    same_audio, same_labels = cut_clips(audio, labels, 1.0)
    assert same_audio is audio and same_labels is labels
    with pytest.raises(ConfigError, match="10 ms"):
        cut_clips(audio, labels, 0.0125)


@pytest.mark.parametrize("name", task_names())
def test_every_scale_has_a_recipe_that_grows_with_the_scale(name):
    cls = get_task_class(name)
    steps = [cls(scale=s).recipe().steps for s in ("smoke", "small", "full")]
    assert steps == sorted(steps) and steps[0] >= 1
