"""MLP encoder for one time point per patient: dense features + an embedding bag of codes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ehrdx.data.batch import TableBatch
from ehrdx.models.head import LabelHead
from ehrdx.models.registry import EVENTS, ROWS, TABLE, ModelKind, register_model, torch_save


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
        if batch.code_weights is None:
            bag = self.code_bag(batch.code_ids, batch.code_offsets)
        else:  # the same mean, each distinct code weighted by its share of the row's events
            bag = F.embedding_bag(batch.code_ids, self.code_bag.weight, batch.code_offsets, mode="sum",
                                  per_sample_weights=batch.code_weights)
        return self.body(torch.cat([batch.dense, bag], dim=-1))

    def states(self, batch: TableBatch) -> torch.Tensor:
        return self.encode(batch)

    def forward(self, batch: TableBatch) -> torch.Tensor:
        return self.head(self.encode(batch))


def build_model(config: dict) -> nn.Module:
    """Rebuild a torch model from its saved config (the 'kind' key picks the class)."""
    config = dict(config)
    kind = config.pop("kind")
    if kind == "mlp":
        return MLPModel(MLPConfig(**config))
    if kind == "sequence":
        from ehrdx.models.sequence import SequenceConfig, SequenceModel

        return SequenceModel(SequenceConfig(**config))
    raise ValueError(f"unknown model kind '{kind}'")


def _build(train_set, n_labels: int, params: dict) -> MLPModel:
    return MLPModel(MLPConfig(n_dense=train_set.features.dense.shape[1], n_codes=params["n_codes"], n_labels=n_labels,
                              hidden=params["hidden"], depth=params["layers"], dropout=params["dropout"],
                              code_dim=params["code_dim"]))


def _load(config: dict, state: dict, files: dict) -> MLPModel:
    if config.get("kind") != "mlp":  # another model's config under the name mlp (an edited model_name)
        raise ValueError(f"model_name is mlp and the model config's kind is {config.get('kind')!r}")
    model = build_model(config)
    model.load_state_dict(state)
    return model.eval()


register_model(ModelKind(
    "mlp", ROWS, (TABLE, EVENTS), "a feed-forward network over the features at the prediction time (no order)",
    _build, torch_save, _load, default_layers=2, default_batch_size=256))
