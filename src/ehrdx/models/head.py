"""A label head that can grow: score = patient state . label embedding + label bias.

Each label is one row, so a new label is a new row appended at the end; existing rows never move.
"""

from __future__ import annotations

import torch
from torch import nn


class LabelHead(nn.Module):
    def __init__(self, state_dim: int, n_labels: int) -> None:
        super().__init__()
        self.label_embedding = nn.Parameter(torch.empty(n_labels, state_dim))
        self.label_bias = nn.Parameter(torch.zeros(n_labels))
        nn.init.normal_(self.label_embedding, std=state_dim**-0.5)

    @property
    def n_labels(self) -> int:
        return self.label_embedding.shape[0]

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        # state [..., D] -> logits [..., L]
        return state @ self.label_embedding.T + self.label_bias

    def set_bias_from_prevalence(self, prevalence: torch.Tensor) -> None:
        """Start each label's bias at its log-odds so early training is not spent learning base rates."""
        p = prevalence.clamp(1e-4, 1 - 1e-4)
        with torch.no_grad():
            self.label_bias.copy_(torch.log(p / (1 - p)))

    def grow(self, rows: torch.Tensor, bias: torch.Tensor) -> None:
        """Append new label rows (and biases) after the existing ones, which are left untouched."""
        with torch.no_grad():
            weight = torch.cat([self.label_embedding.detach(), rows.to(self.label_embedding.device, self.label_embedding.dtype)], dim=0)
            b = torch.cat([self.label_bias.detach(), bias.to(self.label_bias.device, self.label_bias.dtype)], dim=0)
        self.label_embedding = nn.Parameter(weight)
        self.label_bias = nn.Parameter(b)
