"""A label head that can grow: score = patient state . label embedding + label bias.

Each label is one row. Rows are kept in blocks, one per vocabulary version: the labels a model was
trained with are block 0, and each `grow` appends a new block after the existing ones. The logits of a
block are computed by their own matmul of the same shape as before any growth, so growing the head leaves
the old labels' outputs bit-identical by construction (one matmul over all rows would change its shape,
and a BLAS kernel chosen for the new shape may round differently: 7.7e-08 was seen on an AMD EPYC).

Saved names: block 0 is `label_embedding` / `label_bias` (as before blocks existed, so old model files
load as one block), block k is `label_embedding_k` / `label_bias_k`; the model config's `label_blocks`
lists the block sizes.
"""

from __future__ import annotations

import torch
from torch import nn


def _names(k: int) -> tuple[str, str]:
    return ("label_embedding", "label_bias") if k == 0 else (f"label_embedding_{k}", f"label_bias_{k}")


class LabelHead(nn.Module):
    def __init__(self, state_dim: int, n_labels: int, blocks: list[int] | None = None) -> None:
        super().__init__()
        blocks = list(blocks) if blocks else [n_labels]
        if sum(blocks) != n_labels or any(b < 0 for b in blocks):
            raise ValueError(f"label blocks {blocks} do not add up to {n_labels} labels")
        self.state_dim = state_dim
        self.n_blocks = 0
        for size in blocks:
            weight = torch.empty(size, state_dim)
            nn.init.normal_(weight, std=state_dim**-0.5)
            self._add_block(weight, torch.zeros(size))

    def _add_block(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        w_name, b_name = _names(self.n_blocks)
        self.register_parameter(w_name, nn.Parameter(weight))
        self.register_parameter(b_name, nn.Parameter(bias))
        self.n_blocks += 1

    def _block(self, k: int) -> tuple[nn.Parameter, nn.Parameter]:
        w_name, b_name = _names(k)
        return getattr(self, w_name), getattr(self, b_name)

    @property
    def block_sizes(self) -> list[int]:
        return [self._block(k)[0].shape[0] for k in range(self.n_blocks)]

    @property
    def n_labels(self) -> int:
        return sum(self.block_sizes)

    def rows(self) -> torch.Tensor:
        """[L, D] every label's row, in label order (a copy of the blocks, for reading)."""
        return torch.cat([self._block(k)[0] for k in range(self.n_blocks)], dim=0)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        # state [..., D] -> logits [..., L], one matmul per block
        outs = []
        for k in range(self.n_blocks):
            weight, bias = self._block(k)
            outs.append(state @ weight.T + bias)
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)

    def set_bias_from_prevalence(self, prevalence: torch.Tensor) -> None:
        """Start each label's bias at its log-odds so early training is not spent learning base rates."""
        p = prevalence.clamp(1e-4, 1 - 1e-4)
        logits = torch.log(p / (1 - p))
        start = 0
        with torch.no_grad():
            for k in range(self.n_blocks):
                _, bias = self._block(k)
                bias.copy_(logits[start:start + bias.shape[0]])
                start += bias.shape[0]

    def grow(self, rows: torch.Tensor, bias: torch.Tensor) -> None:
        """Append new label rows (and biases) as a new block after the existing ones, which are untouched."""
        if rows.shape[0] == 0:
            return
        weight0, bias0 = self._block(0)
        self._add_block(rows.detach().to(weight0.device, weight0.dtype).clone(),
                        bias.detach().to(bias0.device, bias0.dtype).clone())
