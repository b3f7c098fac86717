"""Sequence models over visits: GRU, LSTM and a causal Transformer, with the growable label head.

Visit input = weighted embedding bag of its codes (mean) + per-code value embeddings scaled by each
standardised numeric value + a projection of the most frequent numeric codes' values at this visit and
their last values before it (carried forward, as in GRU-D) + a projection of time features (time since
the previous and the first visit, age, visit size) + the patient's static facts. One forward pass gives a state after every visit;
the state at visit v depends on visits 0..v only (recurrence, or causal attention), so padding at
the end of short sequences cannot reach any valid output, and the head reads the states at the samples'
positions only. The Transformer (models/transformer.py) runs on the batch's visits only, packed, except
inside attention, which places each sequence in a padded grid (on a CPU, groups of sequences of similar
length, each padded to its own longest) and attends with `is_causal=True` and no mask: padding is only at
the end of a sequence, so no valid position can attend to it, and PyTorch may pick its flash or
memory-efficient kernels (no [B, 1, T, T] mask is materialised).

With a bounded context (data/windows.py) a sequence is a window of the patient's visits and the batch
carries a summary of the visits before it (a weighted bag of their codes and a few counts); a projection
of that summary is added to every visit's input, like the static facts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ehrdx.data.batch import SequenceBatch
from ehrdx.data.sequences import N_TIME_FEATURES
from ehrdx.data.windows import N_PRIOR_FEATURES
from ehrdx.errors import ModelError
from ehrdx.models.head import LabelHead
from ehrdx.models.registry import EVENTS, SEQUENCE, ModelKind, register_model, torch_save
from ehrdx.models.transformer import CausalBlock, VisitDropout, VisitLayout

ENCODERS = ("gru", "lstm", "transformer")


@dataclass
class SequenceConfig:
    n_codes: int
    n_labels: int
    encoder: str = "gru"
    n_numeric: int = 0  # numeric codes given as a dense block (current, previous value, flags)
    hidden: int = 128
    layers: int = 1
    heads: int = 4
    dropout: float = 0.1
    label_blocks: list[int] | None = None  # head block sizes, one per vocabulary version (None: one block)
    prior_summary: bool = False  # reads a summary of the visits before a bounded context's window
    pretrained_targets: list[str] | None = None  # from an encoder (ehrdx pretrain): its next-visit targets,
    # whose output rows the model keeps (buffers `pretrained_rows` [T, H], `pretrained_bias` [T]) to start new
    # labels' rows from (ehrdx update)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key, absent in (("label_blocks", None), ("prior_summary", False), ("pretrained_targets", None)):
            if d[key] == absent:  # configs of models without the feature stay as they were
                del d[key]
        return {"kind": "sequence", **d}


def check_heads(encoder: str, hidden: int, heads: int) -> None:
    """A Transformer splits each visit's vector between its attention heads: `hidden` must divide by `heads`
    (a public check, so that a command can refuse the sizes before it reads any events)."""
    if encoder == "transformer" and hidden % heads:
        raise ModelError(f"hidden {hidden} is not divisible by heads {heads}: the Transformer splits each visit's "
                         "vector between its attention heads\n  fix: e.g. --hidden 128 --heads 4 (or --heads 1)")


class SequenceModel(nn.Module):
    def __init__(self, config: SequenceConfig) -> None:
        super().__init__()
        if config.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder '{config.encoder}' (choose from {', '.join(ENCODERS)})")
        self.config = config
        H = config.hidden
        self.code_embedding = nn.Embedding(config.n_codes, H)
        self.value_embedding = nn.Embedding(config.n_codes, H)
        nn.init.normal_(self.code_embedding.weight, std=H**-0.5)
        nn.init.normal_(self.value_embedding.weight, std=H**-0.5)
        self.time_proj = nn.Linear(N_TIME_FEATURES, H)
        self.numeric_proj = nn.Linear(4 * config.n_numeric, H) if config.n_numeric else None
        self.prior_proj = nn.Linear(H + N_PRIOR_FEATURES, H) if config.prior_summary else None
        self.in_norm = nn.LayerNorm(H)
        self.drop = VisitDropout(config.dropout) if config.encoder == "transformer" else nn.Dropout(config.dropout)
        if config.encoder == "transformer":
            check_heads(config.encoder, H, config.heads)
            self.blocks = nn.ModuleList(CausalBlock(H, config.heads, config.dropout) for _ in range(config.layers))
            self.out_norm = nn.LayerNorm(H)
        else:
            rnn = nn.GRU if config.encoder == "gru" else nn.LSTM
            self.rnn = rnn(H, H, num_layers=config.layers, batch_first=True,
                           dropout=config.dropout if config.layers > 1 else 0.0)
        self.head = LabelHead(H, config.n_labels, config.label_blocks)
        if config.pretrained_targets is not None:
            T = len(config.pretrained_targets)
            self.register_buffer("pretrained_rows", torch.zeros(T, H))
            self.register_buffer("pretrained_bias", torch.zeros(T))

    def visit_vectors(self, batch: SequenceBatch) -> torch.Tensor:
        """[V, H] each visit's vector (its codes, values, numeric block and time features), visit after visit."""
        ids, offs = batch.code_ids, batch.bag_offsets
        codes = F.embedding_bag(ids, self.code_embedding.weight, offs, mode="sum",
                                per_sample_weights=batch.code_weights)
        values = F.embedding_bag(ids, self.value_embedding.weight, offs, mode="sum",
                                 per_sample_weights=batch.value_weights)
        visits = codes + values + self.time_proj(batch.time_feats)
        if self.numeric_proj is not None:
            visits = visits + self.numeric_proj(batch.numeric)
        return visits

    def sequence_vectors(self, batch: SequenceBatch) -> torch.Tensor:
        """[B, H] what is added to every visit of a sequence: its static facts (and the summary of the visits
        before a bounded context's window)."""
        static = F.embedding_bag(batch.static_ids, self.code_embedding.weight, batch.static_offsets, mode="mean")
        if self.prior_proj is not None:
            static = static + self.prior_proj(torch.cat([self.prior(batch), batch.prior_features], 1))
        return static

    def visit_inputs(self, batch: SequenceBatch) -> torch.Tensor:
        """[B, T, H] visit vectors, zeros at padded positions (plus static facts, which are harmless there)."""
        visits = self.visit_vectors(batch)
        B, T = batch.visit_mask.shape
        x = visits.new_zeros(B * T, visits.shape[1]).index_copy(0, batch.visit_index, visits)
        return x.view(B, T, -1) + self.sequence_vectors(batch)[:, None, :]

    def prior(self, batch: SequenceBatch) -> torch.Tensor:
        """[B, H] the weighted bag of the codes before each sequence's window (zeros where there are none)."""
        if batch.prior_ids is None:
            raise ValueError("this model was trained with a bounded context: build its inputs with the same "
                             "context (SequenceSet(..., context=N))")
        return F.embedding_bag(batch.prior_ids, self.code_embedding.weight, batch.prior_offsets, mode="sum",
                               per_sample_weights=batch.prior_weights)

    def encode(self, batch: SequenceBatch) -> torch.Tensor:
        """Patient state after every visit, [B, T, H] (the Transformer's is zeros at padded positions)."""
        if self.config.encoder == "transformer":
            h, layout = self.encode_visits(batch)
            return layout.grid(h)
        x = self.drop(self.in_norm(self.visit_inputs(batch)))
        out, _ = self.rnn(x)
        return out + x  # a skip connection: the latest visit reaches the head directly

    def encode_visits(self, batch: SequenceBatch) -> tuple[torch.Tensor, VisitLayout]:
        """The Transformer's state after every real visit, [V, H] in the layout's packed order: no work is
        spent on padding outside attention (models/transformer.py)."""
        layout = VisitLayout(batch.visit_index, batch.visit_mask)
        T = batch.visit_mask.shape[1]
        seq = layout.pack(batch.visit_index) // T
        x = layout.pack(self.visit_vectors(batch)) + self.sequence_vectors(batch).index_select(0, seq)
        x = self.drop(self.in_norm(x))
        for block in self.blocks:
            x = block(x, layout)
        return self.out_norm(x), layout

    def states(self, batch: SequenceBatch) -> torch.Tensor:
        """Patient state [S, H] at each of the batch's samples: what the label head reads."""
        if self.config.encoder == "transformer":
            h, layout = self.encode_visits(batch)
            return h.index_select(0, layout.rows(batch.gather))
        h = self.encode(batch)
        return h.reshape(-1, h.shape[-1]).index_select(0, batch.gather)

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        """Logits [S, L] for the batch's samples (the states at their positions)."""
        return self.head(self.drop(self.states(batch)))


    # -- what a pretrained encoder (ehrdx pretrain) gives ---------------------------------------------
    def body_state(self) -> dict[str, torch.Tensor]:
        """The body's tensors (embeddings, projections, recurrent or Transformer layers): all but the label
        head and the kept pretrained rows."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(("head.", "pretrained_"))}

    def body_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("head.")]

    def keep_pretrained_rows(self, targets: list[str], rows: torch.Tensor, bias: torch.Tensor) -> None:
        """Keep an encoder's next-visit output rows (one per target code) with the model, saved with it."""
        if rows.shape != (len(targets), self.config.hidden) or bias.shape != (len(targets),):
            raise ValueError(f"pretrained rows {tuple(rows.shape)} / bias {tuple(bias.shape)} do not fit "
                             f"{len(targets)} targets of width {self.config.hidden}")
        self.config.pretrained_targets = list(targets)
        device = self.code_embedding.weight.device
        self.register_buffer("pretrained_rows", rows.detach().to(device, torch.float32).clone())
        self.register_buffer("pretrained_bias", bias.detach().to(device, torch.float32).clone())

    def pretrained_start(self, label_codes: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Starting rows for labels from the kept pretrained rows: per label, the mean of the rows (and of the
        biases) of the codes that define it; (rows [k, H], bias [k], found [k] bool): a label none of whose
        codes was a pretraining target is not found (zeros). Nothing is found in a model without them."""
        k, H = len(label_codes), self.config.hidden
        rows, bias, found = torch.zeros(k, H), torch.zeros(k), torch.zeros(k, dtype=torch.bool)
        targets = self.config.pretrained_targets
        if targets is None:
            return rows, bias, found
        index = {code: i for i, code in enumerate(targets)}
        for j, codes in enumerate(label_codes):
            ids = sorted({index[c] for c in codes if c in index})
            if ids:
                rows[j] = self.pretrained_rows[ids].detach().float().cpu().mean(0)
                bias[j] = self.pretrained_bias[ids].detach().float().cpu().mean()
                found[j] = True
        return rows, bias, found


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build(train_set, n_labels: int, params: dict, encoder: str = "gru") -> SequenceModel:
    return SequenceModel(SequenceConfig(n_codes=params["n_codes"], n_labels=n_labels, encoder=encoder,
                                        n_numeric=len(train_set.numeric_ids), hidden=params["hidden"],
                                        layers=params["layers"], heads=params["heads"], dropout=params["dropout"],
                                        prior_summary=getattr(train_set, "context", None) is not None))


def _load(config: dict, state: dict, files: dict, name: str) -> SequenceModel:
    if config.get("kind") != "sequence" or config.get("encoder") != name:  # an edited model_name
        raise ValueError(f"model_name is {name} and the model config's kind {config.get('kind')!r}, encoder "
                         f"{config.get('encoder')!r}")
    model = SequenceModel(SequenceConfig(**{k: v for k, v in config.items() if k != "kind"}))
    model.load_state_dict(state)
    return model.eval()


_WHAT = {"gru": "a GRU over visits", "lstm": "an LSTM over visits",
         "transformer": "a causal Transformer over visits"}
for _name in ENCODERS:
    register_model(ModelKind(
        _name, SEQUENCE, (EVENTS,), _WHAT[_name] + ": a state after every visit, read at each prediction time",
        lambda train_set, n_labels, params, _e=_name: _build(train_set, n_labels, params, _e), torch_save,
        lambda config, state, files, _e=_name: _load(config, state, files, _e),
        default_layers=2 if _name == "transformer" else 1, default_batch_size=64, explains=True))
