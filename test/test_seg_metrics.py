"""Segmentation metrics against hand-computed confusion matrices."""
import numpy as np
import pytest

from fcn_perception.evaluation.segmentation import ConfusionMatrix, segmentation_scores
from fcn_perception.training.losses import class_frequencies, median_frequency_weights


def test_confusion_matrix_counts_and_ignores():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(target, pred)
    expected = np.array([[1, 1, 0],
                         [0, 2, 0],
                         [1, 0, 0]])
    np.testing.assert_array_equal(cm.matrix, expected)


def test_scores_match_hand_computation():
    # rows: ground truth, cols: prediction
    m = np.array([[50, 10, 0],
                  [5, 35, 0],
                  [0, 0, 0]])  # class 2 absent from ground truth and prediction
    s = segmentation_scores(m, ["a", "b", "c"])
    assert s["pixel_accuracy"] == pytest.approx(85 / 100)
    assert s["mean_accuracy"] == pytest.approx((50 / 60 + 35 / 40) / 2)
    iou_a = 50 / (60 + 55 - 50)
    iou_b = 35 / (40 + 45 - 35)
    assert s["per_class_iou"]["a"] == pytest.approx(iou_a)
    assert s["per_class_iou"]["b"] == pytest.approx(iou_b)
    assert s["per_class_iou"]["c"] is None
    assert s["mean_iou"] == pytest.approx((iou_a + iou_b) / 2)
    assert s["fw_iou"] == pytest.approx((60 * iou_a + 40 * iou_b) / 100)


def test_class_predicted_but_absent_counts_as_zero_iou():
    m = np.array([[8, 2], [0, 0]])
    s = segmentation_scores(m)
    assert s["per_class_iou"]["1"] == 0.0
    assert s["mean_iou"] == pytest.approx((8 / 10 + 0) / 2)
    assert s["mean_accuracy"] == pytest.approx(0.8)


def test_median_frequency_weights():
    labels = [np.array([0, 0, 0, 1]), np.array([0, 2, 2, 2])]
    freq = class_frequencies(labels, 4, ignore_index=None)
    np.testing.assert_allclose(freq, [4 / 8, 1 / 4, 3 / 4, 0])
    w = median_frequency_weights(freq).numpy()
    np.testing.assert_allclose(w, [0.5 / 0.5, 0.5 / 0.25, 0.5 / 0.75, 0], rtol=1e-6)
    np.testing.assert_allclose(median_frequency_weights(freq, 0.5).numpy(), np.sqrt(w), rtol=1e-6)
