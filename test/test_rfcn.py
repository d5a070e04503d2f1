"""R-FCN model pieces: anchors, box coding, PSRoI pooling parity, learning on real
frames, ONNX export parity with ONNX Runtime, weights and backbone initialisation."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from fcn_perception.card import IMAGENET_MEAN, IMAGENET_STD
from fcn_perception.errors import WeightsError
from fcn_perception.evaluation.boxes import derive_boxes
from fcn_perception.models import build_model
from fcn_perception.models.anchors import AnchorGenerator
from fcn_perception.models.box_coder import BoxCoder, match_boxes
from fcn_perception.models.psroi import ps_roi_pool
from fcn_perception.models.rfcn import RFCNExport, architecture, export_onnx, init_backbone_from
from fcn_perception.weights_io import load_weights_into, save_state_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SAMPLE = Path(__file__).resolve().parent.parent / "fcn_perception" / "data" / "camvid_sample"


def test_anchors_nine_per_cell_on_the_stride_grid():
    gen = AnchorGenerator(sizes=(20, 50, 125), ratios=(0.5, 1.0, 2.0), stride=16)
    anchors = gen(torch.zeros(1, 8, 3, 5))
    assert gen.num_anchors == 9 and anchors.shape == (3 * 5 * 9, 4)
    a = anchors.reshape(3, 5, 9, 4)
    cx, cy = (a[..., 0] + a[..., 2]) / 2, (a[..., 1] + a[..., 3]) / 2
    assert torch.allclose(cx, (16.0 * torch.arange(5))[None, :, None].expand(3, 5, 9))
    assert torch.allclose(cy, (16.0 * torch.arange(3))[:, None, None].expand(3, 5, 9))
    w, h = a[0, 0, :, 2] - a[0, 0, :, 0], a[0, 0, :, 3] - a[0, 0, :, 1]
    sizes = torch.tensor([20.0, 50, 125] * 3)
    ratios = torch.tensor([0.5] * 3 + [1.0] * 3 + [2.0] * 3)
    assert torch.allclose(w * h, sizes**2, rtol=1e-5)
    assert torch.allclose(h / w, ratios, rtol=1e-5)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_encode_decode_round_trip(weights):
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(200, 2, generator=g) * 400
    ref = torch.cat([ref, ref + 5 + torch.rand(200, 2, generator=g) * 150], 1)
    box = torch.rand(200, 2, generator=g) * 400
    box = torch.cat([box, box + 1 + torch.rand(200, 2, generator=g) * 300], 1)
    coder = BoxCoder(weights)
    deltas = coder.encode(box, ref)
    assert torch.allclose(coder.decode(deltas, ref), box, atol=1e-3)
    assert torch.allclose(coder.encode(ref, ref), torch.zeros_like(ref), atol=1e-6)
    # the paper's parameterisation: x' = x + w * tx (weights only rescale the targets)
    t = torch.tensor([[0.5 * weights[0], -0.25 * weights[1], 0.0, math.log(2) * weights[3]]])
    out = coder.decode(t, torch.tensor([[0.0, 0.0, 10.0, 20.0]]))
    assert torch.allclose(out, torch.tensor([[5.0, -15.0, 15.0, 25.0]]), atol=1e-5)


def test_anchor_labels_by_iou():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    ref = torch.tensor([[0.0, 0.0, 10.0, 10.0],   # IoU 1     -> positive
                        [0.0, 0.0, 10.0, 12.0],   # IoU 0.83  -> positive
                        [0.0, 0.0, 10.0, 20.0],   # IoU 0.5   -> ignored
                        [0.0, 0.0, 10.0, 40.0],   # IoU 0.25  -> negative
                        [50.0, 50.0, 60.0, 60.0]])
    assert match_boxes(ref, gt, 0.7, 0.3, False).tolist() == [0, 0, -2, -1, -1]
    # low-quality rule: the best anchor of every box is positive even below 0.7
    assert match_boxes(ref[2:], gt, 0.7, 0.3, True).tolist() == [0, -1, -1]
    assert match_boxes(ref, gt[:0], 0.7, 0.3, True).tolist() == [-1] * 5


def _random_rois(g, n, height, width, stride, batch):
    xy = torch.rand(n, 2, generator=g) * torch.tensor([width, height]) * stride * 1.2 - 20
    wh = torch.rand(n, 2, generator=g) * 12 * stride
    rois = torch.cat([torch.randint(0, batch, (n, 1), generator=g).float(), xy, xy + wh], 1)
    # corners on exact half cells (x.5 after scaling) exercise the rounding rule
    rois[: n // 4, 1:] = torch.randint(0, 40, (n // 4, 4), generator=g).float() * (stride / 2)
    rois[: n // 4, 3:] += rois[: n // 4, 1:3]
    return rois


@pytest.mark.parametrize("k", [3, 2, 7])
def test_psroi_pool_matches_torchvision(k):
    g = torch.Generator().manual_seed(k)
    worst = 0.0
    for trial in range(20):
        c_out = 1 + trial % 4
        h, w = (int(v) for v in torch.randint(2, 30, (2,), generator=g))
        x = torch.randn(2, c_out * k * k, h, w, generator=g) * 3
        rois = _random_rois(g, 50, h, w, 16, 2)
        ref = torchvision.ops.ps_roi_pool(x, rois, k, 1 / 16)
        out = ps_roi_pool(x, rois, k, 1 / 16)
        worst = max(worst, (ref - out).abs().max().item())
        padded = torch.nn.functional.pad(x, (0, 1, 0, 1))
        ref_last = torchvision.ops.ps_roi_pool(padded, rois, k, 1 / 16)
        out_last = ps_roi_pool(x, rois, k, 1 / 16, include_last=True)
        worst = max(worst, (ref_last - out_last).abs().max().item())
    assert worst < 1e-4


def test_psroi_pool_gradient():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2 * 9, 6, 7, dtype=torch.float64, generator=g, requires_grad=True)
    rois = torch.tensor([[0, 3.0, 5.0, 70.0, 60.0], [0, 20.0, 10.0, 40.0, 30.0]],
                        dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: ps_roi_pool(t, rois, 3, 1 / 8, True), (x,))


def _sample_frames(n=2, crop=(192, 256)):
    lines = (SAMPLE / "val.txt").read_text().split("\n")[:n]
    images, targets = [], []
    for line in lines:
        img_path, lab_path = line.split()
        image = np.asarray(Image.open(SAMPLE / img_path).convert("RGB"))
        label = np.asarray(Image.open(SAMPLE / lab_path))
        y0, x0 = 120, 150  # a crop with cars and pedestrians, boxes derived from it
        image = image[y0:y0 + crop[0], x0:x0 + crop[1]]
        label = label[y0:y0 + crop[0], x0:x0 + crop[1]]
        boxes, labels = derive_boxes(label, min_area=50)
        x = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255
        x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
        images.append(x)
        targets.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)})
    return torch.stack(images), targets


@pytest.mark.slow
def test_loss_decreases_on_real_frames():
    torch.manual_seed(0)
    images, targets = _sample_frames()
    assert all(len(t["boxes"]) > 0 for t in targets)
    model = build_model(architecture(rpn_pre_nms_top_n_train=600,
                                     rpn_post_nms_top_n_train=100)).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def loss_at(seed):
        torch.manual_seed(seed)  # same anchor and RoI samples for the comparison
        with torch.no_grad():
            return float(sum(model(images, targets).values()))

    before = loss_at(123)
    for _ in range(15):
        losses = model(images, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    after = loss_at(123)
    assert after < 0.7 * before, (before, after)


def _lively_model(**cfg):
    """A random R-FCN whose head is perturbed so that it outputs many detections."""
    torch.manual_seed(0)
    model = build_model(architecture(**cfg)).eval()
    with torch.no_grad():
        model.head.ps_cls.bias.normal_(0, 1.0)
        model.head.ps_cls.weight.normal_(0, 0.05)
        model.head.ps_reg.weight.normal_(0, 0.05)
        model.rpn.reg.weight.normal_(0, 0.02)
    return model


def test_inference_output_format():
    model = _lively_model(max_detections=40)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 160, 224))
    assert len(out) == 2
    for det in out:
        n = len(det["scores"])
        assert 0 < n <= 40 and det["boxes"].shape == (n, 4)
        assert (det["scores"][:-1] >= det["scores"][1:]).all()
        assert det["labels"].min() >= 0 and det["labels"].max() < 3
        # every detection carries its RoI's class distribution; its score is its label's
        dist = det["class_scores"]
        assert dist.shape == (n, 3) and (dist.sum(1) <= 1 + 1e-5).all()
        torch.testing.assert_close(dist.gather(1, det["labels"][:, None])[:, 0], det["scores"])
        b = det["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 224).all() and (b[:, 3] <= 160).all()


@pytest.mark.slow
def test_onnx_export_matches_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = _lively_model()
    path = export_onnx(model, tmp_path / "rfcn.onnx", height=192, width=256)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image"]
    assert [o.name for o in sess.get_outputs()] == RFCNExport.OUTPUT_NAMES
    assert sess.get_outputs()[0].shape == [100, 4]
    wrapper = RFCNExport(model)
    g = torch.Generator().manual_seed(3)
    for h, w in [(192, 256), (360, 480), (224, 300)]:  # dynamic height and width
        x = torch.randn(1, 3, h, w, generator=g)
        with torch.no_grad():
            boxes, scores, labels, num, dist = wrapper(x)
        o_boxes, o_scores, o_labels, o_num, o_dist = sess.run(None, {"image": x.numpy()})
        assert o_dist.shape == (100, 3)
        assert o_boxes.shape == (100, 4) and o_scores.shape == (100,)
        assert int(o_num) == int(num) > 0
        # a random head gives many near-equal scores, so float noise may flip NMS picks:
        # each torch detection needs an ONNX one of its class at IoU >= 0.9 (>= 95% of them)
        n = int(num)
        iou = torchvision.ops.box_iou(boxes[:n], torch.from_numpy(o_boxes[:n]))
        same = labels[:n, None] == torch.from_numpy(o_labels[:n])[None, :]
        matched = ((iou >= 0.9) & same).any(dim=1).float().mean()
        assert matched >= 0.95, float(matched)
        np.testing.assert_allclose(np.sort(o_scores), np.sort(scores.numpy()), atol=1e-3)
        np.testing.assert_allclose(o_dist.sum(), dist.numpy().sum(), rtol=1e-3)
        assert (o_labels[int(num):] == -1).all() and (o_scores[int(num):] == 0).all()


def test_fp16_weights_round_trip_and_backbone_init(tmp_path):
    model = build_model(architecture())
    save_state_dict(model.state_dict(), tmp_path / "w.safetensors", half=True)
    other = build_model(architecture())
    load_weights_into(other, tmp_path / "w.safetensors")
    a = model.state_dict()["head.ps_cls.weight"]
    assert torch.allclose(other.state_dict()["head.ps_cls.weight"], a, atol=1e-3)
    with pytest.raises(WeightsError, match="do not fit"):
        load_weights_into(build_model(architecture(num_classes=4)), tmp_path / "w.safetensors")

    fcn = build_model({"name": "fcn8s", "backbone": "efficientnet_lite0", "num_classes": 11})
    torch.save({"model": fcn.state_dict(), "epoch": 3}, tmp_path / "best.pt")
    assert init_backbone_from(model, tmp_path / "best.pt") > 0
    key = "_blocks.6._expand_conv.weight"
    assert torch.equal(model.backbone.state_dict()[key], fcn.backbone.state_dict()[key])
    torch.save({"model": {"x.weight": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="backbone"):
        init_backbone_from(model, tmp_path / "bad.pt")


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet18"])
@pytest.mark.parametrize(("neck", "cells"), [("fuse8", (12, 16)), ("fuse", (6, 8)),
                                             ("dilated", (6, 8))])
def test_neck_strides(backbone, neck, cells):
    model = build_model(architecture(backbone=backbone, neck=neck)).eval()
    assert model.stride * cells[0] == 96
    assert model.features(torch.zeros(1, 3, 96, 128)).shape[-2:] == cells
    assert model.rpn.anchor_generator.stride == model.head.stride == model.stride
    with pytest.raises(ValueError, match="unknown R-FCN options"):
        architecture(bogus=1)


def test_ohem_and_images_without_objects():
    torch.manual_seed(0)
    model = build_model(architecture(ohem=True, roi_batch_size=16)).train()
    images = torch.randn(2, 3, 128, 160)
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    losses = model(images, targets, [(128, 160), (100, 120)])
    assert set(losses) == {"rpn_cls", "rpn_box", "cls", "box"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.rpn.reg.weight.grad is not None and model.head.ps_reg.weight.grad is not None
    with pytest.raises(ValueError, match="needs targets"):
        model(images)
