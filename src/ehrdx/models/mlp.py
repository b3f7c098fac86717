"""MLP encoder for one time point per patient: dense features + an embedding bag of codes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ehrdx.data.batch import TableBatch
from ehrdx.models.head import LabelHead


@dataclass
class MLPConfig:
    n_dense: int
    n_codes: int
    n_labels: int
    hidden: int = 128
    depth: int = 2
    dropout: float = 0.1
    code_dim: int = 32
    label_blocks: list[int] | None = None  # head block sizes, one per vocabulary version (None: one block)

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["label_blocks"] is None:
            del d["label_blocks"]
        return {"kind": "mlp", **d}


class MLPModel(nn.Module):
    """dense [B, D] + codes (flat ids, offsets) -> patient state [B, H] -> label logits [B, L]."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        # Mean over a patient's codes: an empty bag gives zeros, which the dense block can still correct.
        self.code_bag = nn.EmbeddingBag(config.n_codes, config.code_dim, mode="mean")
        layers: list[nn.Module] = []
        width = config.n_dense + config.code_dim
        for _ in range(config.depth):
            layers += [nn.Linear(width, config.hidden), nn.GELU(), nn.Dropout(config.dropout)]
            width = config.hidden
        self.body = nn.Sequential(*layers)
        self.head = LabelHead(width, config.n_labels, config.label_blocks)

    def encode(self, batch: TableBatch) -> torch.Tensor:
        bag = self.code_bag(batch.code_ids, batch.code_offsets)
        return self.body(torch.cat([batch.dense, bag], dim=-1))

    def states(self, batch: TableBatch) -> torch.Tensor:
        return self.encode(batch)

    def forward(self, batch: TableBatch) -> torch.Tensor:
        return self.head(self.encode(batch))


def build_model(config: dict) -> nn.Module:
    """Rebuild a model from its saved config (the 'kind' key picks the encoder)."""
    config = dict(config)
    kind = config.pop("kind")
    if kind == "mlp":
        return MLPModel(MLPConfig(**config))
    if kind == "sequence":
        from ehrdx.models.sequence import SequenceConfig, SequenceModel

        return SequenceModel(SequenceConfig(**config))
    raise ValueError(f"unknown model kind '{kind}'")
