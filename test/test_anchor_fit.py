"""Anchor fitting: k-means in log space finds the size and ratio clusters of the boxes."""
import numpy as np

from fcn_perception.training.anchor_fit import box_statistics, log_kmeans


def test_log_kmeans_recovers_three_size_clusters():
    rng = np.random.default_rng(0)
    sizes = np.concatenate([rng.lognormal(np.log(m), 0.1, 300) for m in (15, 45, 120)])
    centres = log_kmeans(sizes)
    assert np.allclose(centres, [15, 45, 120], rtol=0.05), centres


def test_box_statistics_per_class_and_anchors():
    # class 0: 20x40 boxes (tall), class 1: 80x40 boxes (wide)
    tall = np.array([[0, 0, 20, 40]] * 10, np.float32)
    wide = np.array([[0, 0, 80, 40]] * 5, np.float32)
    stats = box_statistics(np.concatenate([tall, wide]), np.array([0] * 10 + [1] * 5),
                           ("Pedestrian", "Car"))
    assert stats["boxes"] == 15
    ped, car = stats["per_class"]["Pedestrian"], stats["per_class"]["Car"]
    assert ped["boxes"] == 10 and ped["height_over_width"]["p50"] == 2.0
    assert car["size"]["p50"] == round(float(np.sqrt(80 * 40)), 2)
    assert car["height_over_width"]["p50"] == 0.5
    assert min(stats["aspect_ratios"]) == 0.5 and max(stats["aspect_ratios"]) == 2.0
