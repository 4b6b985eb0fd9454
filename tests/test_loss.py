"""The training loss (dlib.training.loss): a loss on every MSC output, normalised by the valid pixels of the global
batch."""

import math

import torch
import torch.nn.functional as F
from training_helpers import Tiny  # the training tests' tiny network (output stride 8)

from dlib.nets.msc import MSC, labels_at_logits
from dlib.training import distributed, train
from dlib.training import loss as dlib_loss


def test_loss_is_the_mean_over_valid_pixels_of_the_global_batch_however_it_is_split():
    torch.manual_seed(0)
    model = Tiny()
    x = torch.randn(4, 3, 24, 24)
    y = torch.randint(0, 21, (4, 24, 24))
    y[0, :12] = 255  # different numbers of void pixels per image
    y[3] = 255
    y[3, 0, 0] = 4
    logits = model(x)
    target = y[:, ::8, ::8]  # logit i sits on pixel 8i
    expected = F.cross_entropy(logits, target, ignore_index=255)
    expected.backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    info = distributed.DistInfo()
    one = train.train_step(model, [(x, y)], torch.device("cpu"), info, False, 1)
    assert math.isclose(one, float(expected.detach()), rel_tol=1e-5)
    model.zero_grad()
    two = train.train_step(model, [(x[:1], y[:1]), (x[1:], y[1:])], torch.device("cpu"), info, False, 2)
    assert math.isclose(two, float(expected.detach()), rel_tol=1e-5)
    for p, g in zip(model.parameters(), ref):
        assert torch.allclose(p.grad, g, atol=1e-6)


def test_msc_loss_sums_every_scale_and_the_fusion(model):
    msc = MSC(model).train()
    x = torch.randn(2, 3, 65, 65)
    labels = torch.randint(0, 3, (2, 65, 65))
    out = msc(x)
    outputs = dlib_loss.as_outputs(out, (65, 65))
    # No void labels: every logit is a valid pixel, so sum / count is the mean cross-entropy of each output.
    counts = [torch.tensor(float(o.shape[0] * o.shape[-2] * o.shape[-1]), dtype=torch.float64) for o, _ in outputs]
    loss = dlib_loss.segmentation_loss(outputs, labels, (65, 65), counts)
    expected = (F.cross_entropy(out.per_scale[0], labels[:, ::8, ::8])
                + F.cross_entropy(out.per_scale[2], labels[:, ::16, ::16])
                + F.cross_entropy(out.fused, labels[:, ::8, ::8])
                + F.cross_entropy(out.per_scale[1], labels_at_logits(labels, (65, 65), (49, 49), (7, 7))))
    assert torch.allclose(loss, expected)
    loss.backward()
    assert model.head.branches[0].conv.weight.grad is not None
    model.zero_grad()
    msc.eval()


def test_loss_terms_counts_every_summed_msc_output():
    assert dlib_loss.loss_terms(True, (1.0, 0.75, 0.5), "sum") == 4  # three scales and the fusion
    assert dlib_loss.loss_terms(True, (1.0, 0.75, 0.5), "mean") == 1  # already averaged
    assert dlib_loss.loss_terms(False, (1.0, 0.75, 0.5), "sum") == 1
