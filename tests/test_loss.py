"""The masked loss: unknown labels contribute nothing; positive weights favour rare labels."""

import numpy as np
import torch

from ehrdx.train.loop import label_pos_weight, masked_bce_with_logits


def test_masked_targets_and_logits_change_neither_loss_nor_gradient():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g, requires_grad=True)
    y = (torch.rand(6, 4, generator=g) < 0.3).float()
    mask = torch.rand(6, 4, generator=g) < 0.6
    s1, n1 = masked_bce_with_logits(logits, y, mask)
    (s1 / n1).backward()
    grad1 = logits.grad.clone()

    logits2 = logits.detach().clone()
    logits2[~mask] = 1e4  # extreme values where masked must not produce inf/NaN either
    logits2.requires_grad_(True)
    y2 = torch.where(mask, y, 1 - y)
    s2, n2 = masked_bce_with_logits(logits2, y2, mask)
    (s2 / n2).backward()
    assert torch.equal(s1, s2) and int(n1) == int(n2) == int(mask.sum())
    assert torch.equal(grad1, logits2.grad)
    assert (logits2.grad[~mask] == 0).all()
    # the value is the mean over known entries only
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], y[mask])
    assert torch.allclose(s1 / n1, ref)


def test_pos_weight_is_neg_over_pos_capped():
    y = np.array([[1, 0], [0, 0], [0, 0], [0, 1]], dtype=np.float32)
    mask = np.array([[1, 1], [1, 1], [1, 1], [1, 0]], dtype=bool)  # label 1's only positive is masked
    w = label_pos_weight(y, mask, cap=2.5)
    assert torch.allclose(w, torch.tensor([2.5, 1.0]))  # 3/1 capped at 2.5; no known positive -> 1
