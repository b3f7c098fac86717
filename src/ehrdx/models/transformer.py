"""The causal Transformer's blocks, run on a batch's visits only (no padding) except inside attention.

A batch holds sequences of very different lengths (on the hospital shape, bucketed batches were 38% padding,
and half of the longest batch): everything but attention (layer norms, projections, the feed-forward
network, dropout) works on each visit on its own, so it runs on the packed visits, [V, D]. Attention needs
each sequence's visits in a row: `VisitLayout` places them in padded grids, and on a CPU it cuts the batch into
groups of sequences of similar length, each padded to its own longest only, because attention costs the
square of the length (a group of sequences of 600 to 1,500 visits padded to 1,500 does up to 6x the work).
On other devices the whole batch is one group (the host would otherwise wait for the lengths).

Every result is the same as on the padded [B, T, D] grid: padding is only at the end of a sequence, attention
is causal, so no real visit attends to a padded one, and everything else is per visit.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# Cut a batch into groups only where its longest sequence has more visits than this (below it, attention
# is a small part of a block's work and a group's extra calls cost about what they save).
GROUP_MIN_LENGTH = 64
# A group holds sequences at least this fraction of its longest one's length, so at most 1 - 0.9^2 = 19% of
# its attention is padding. In one epoch at 400 patients of the hospital shape: the padded batches' attention
# was 3.0x the sequences' own, in groups 1.09x, with about 4 groups per batch.
GROUP_LENGTH_RATIO = 0.9


def length_groups(lengths: np.ndarray, min_length: int = GROUP_MIN_LENGTH,
                  ratio: float = GROUP_LENGTH_RATIO) -> list[np.ndarray]:
    """Sequences (indices into `lengths`) in groups of similar length, longest first: a group starts with
    the longest sequence not yet placed and takes every next one at least `ratio` of its length; once the
    longest left is at most `min_length`, the rest is one group."""
    order = np.argsort(-lengths, kind="stable")
    groups, start = [], 0
    while start < len(order):
        longest = int(lengths[order[start]])
        if longest <= min_length:
            groups.append(order[start:])
            break
        end = start + int(np.searchsorted(-lengths[order[start:]], -ratio * longest, side="right"))
        groups.append(order[start:end])
        start = end
    return groups


def _fills(flat: torch.Tensor, cells: int) -> bool:
    """Whether grid positions `flat` are 0, 1, ..., cells - 1 in order (a grid without padding)."""
    return flat.numel() == cells and bool((flat[1:] > flat[:-1]).all())


class VisitLayout:
    """Where a batch's visits sit: packed (V rows, in the order the blocks see them) and, for attention,
    in padded grids of whole sequences (one or more groups).

    Built from the batch's `visit_index` (each visit's flat position, sequence * T + visit, in the [B, T]
    grid) and `visit_mask` [B, T]. `order` [V] is the batch's visit (row of its visit arrays) at each packed
    row; `rows(flat)` maps flat grid positions (e.g. the samples' `gather`) to packed rows."""

    def __init__(self, visit_index: torch.Tensor, visit_mask: torch.Tensor) -> None:
        B, T = visit_mask.shape
        self.batch_shape = (B, T)
        self.visit_index = visit_index
        device = visit_index.device
        lengths = None if device.type != "cpu" or T <= GROUP_MIN_LENGTH else visit_mask.sum(1).numpy()
        groups = None if lengths is None else length_groups(lengths)
        if groups is None or len(groups) == 1:
            self.order = None  # packed rows are the batch's visits, in its order
            V = visit_index.numel()
            # No padding (e.g. full windows of a bounded context): the packed rows are the grid already.
            self.groups = [(0, V, B, T, None if device.type == "cpu" and _fills(visit_index, B * T) else visit_index)]
            return
        # Visits of group 0, then of group 1, ...; in each, sequence after sequence (its rank in the group).
        seq, pos = visit_index // T, visit_index % T
        group_of, rank = np.empty(B, np.int64), np.empty(B, np.int64)
        for g, members in enumerate(groups):
            group_of[members], rank[members] = g, np.arange(len(members))
        seq_np = seq.numpy()
        key = group_of[seq_np] * B + rank[seq_np]
        order = np.argsort(key, kind="stable")  # stable: a sequence's visits stay in order
        self.order = torch.from_numpy(order)
        counts = np.bincount(group_of[seq_np], minlength=len(groups))
        starts = np.concatenate([[0], np.cumsum(counts)])
        rank_t, pos_sorted = torch.from_numpy(rank), pos[self.order]
        self.groups = []
        for g, members in enumerate(groups):
            lo, hi = int(starts[g]), int(starts[g + 1])
            Tg = int(lengths[members].max())
            flat = rank_t[seq[self.order[lo:hi]]] * Tg + pos_sorted[lo:hi]
            self.groups.append((lo, hi, len(members), Tg, None if _fills(flat, len(members) * Tg) else flat))

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[V, ...] per-visit rows (the batch's visit order) in packed order."""
        return x if self.order is None else x.index_select(0, self.order)

    def grid_positions(self) -> torch.Tensor:
        """[V] the flat grid position (sequence * T + visit) of each packed row."""
        return self.visit_index if self.order is None else self.visit_index.index_select(0, self.order)

    def rows(self, flat: torch.Tensor) -> torch.Tensor:
        """Packed rows of flat grid positions (sequence * T + visit) that hold visits."""
        where = self.grid_positions()
        B, T = self.batch_shape
        slot = torch.zeros(B * T, dtype=torch.int64, device=flat.device)
        slot.index_copy_(0, where, torch.arange(where.numel(), device=flat.device))
        return slot.index_select(0, flat)

    def grid(self, x: torch.Tensor) -> torch.Tensor:
        """Packed rows [V, H] placed in the batch's padded grid [B, T, H] (zeros at padding)."""
        B, T = self.batch_shape
        return x.new_zeros(B * T, x.shape[1]).index_copy(0, self.grid_positions(), x).view(B, T, -1)

    def attend(self, qkv: torch.Tensor, heads: int) -> torch.Tensor:
        """Causal self-attention of each sequence's visits: [V, 3D] packed queries, keys and values -> [V, D]."""
        D = qkv.shape[1] // 3
        out = []
        # split, not slices: a slice's gradient would be a zero-filled [V, 3D] tensor per group
        parts = torch.split(qkv, [hi - lo for lo, hi, *_ in self.groups])
        for part, (_, _, B, T, flat) in zip(parts, self.groups, strict=True):
            if flat is None:
                out.append(causal_attention(part.view(B, T, 3 * D), heads).view(B * T, D))
                continue
            padded = part.new_zeros(B * T, 3 * D).index_copy_(0, flat, part)
            out.append(causal_attention(padded.view(B, T, 3 * D), heads).view(B * T, D).index_select(0, flat))
        return out[0] if len(out) == 1 else torch.cat(out)


def causal_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Causal self-attention over padded sequences: [B, T, 3D] queries, keys and values -> [B, T, D]."""
    B, T, D3 = qkv.shape
    D = D3 // 3
    q, k, v = qkv.view(B, T, 3, heads, D // heads).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, T, D / heads)
    # Causal without a mask: padding at the end is never attended from a valid visit. No dropout on the
    # attention weights: with it PyTorch's CPU kernels fall back to the materialised [B, heads, T, T] path
    # (11x slower at T = 1,024); dropout stays on the residual branches.
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return a.transpose(1, 2).reshape(B, T, D)


class VisitDropout(nn.Module):
    """Dropout with cheaper masks than `nn.Dropout`'s on a CPU, where its random numbers (`bernoulli_`) were
    11-13% of a Transformer epoch and cost 8x these to draw. An element is kept when a 16-bit random number
    (four from each 64-bit draw of torch's generator) is at least p x 65,536, and scaled by 1 / (share kept);
    so the rate is p to within 1 / 65,536. Serial and seeded by torch's generator, as `nn.Dropout`: the same
    masks at any number of threads. Other devices use `F.dropout` (fused, and cheap there)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout must be between 0 and 1, not {p}")
        self.p = p
        self.dropped = round(p * 65536)  # of the 65,536 values of a 16-bit number, how many drop an element

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.dropped == 0:
            return x
        if x.device.type != "cpu" or self.dropped == 65536:
            return F.dropout(x, self.p, True)
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # every 64-bit value
        keep = bits.view(torch.int16)[:n].view(x.shape) >= self.dropped - 32768
        return x * keep.to(x.dtype).mul_(65536 / (65536 - self.dropped))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class CausalBlock(nn.Module):
    """Pre-norm Transformer block with causal attention (each visit attends to itself and earlier visits) and
    a feed-forward network 2 x D wide."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.drop = VisitDropout(dropout)

    def forward(self, x: torch.Tensor, layout: VisitLayout | None = None) -> torch.Tensor:
        """x: packed visits [V, D] placed by `layout`, or without one padded sequences [B, T, D]."""
        qkv = self.qkv(self.norm1(x))
        a = causal_attention(qkv, self.heads) if layout is None else layout.attend(qkv, self.heads)
        x = x + self.drop(self.out(a))
        return x + self.drop(self.ff(self.norm2(x)))
