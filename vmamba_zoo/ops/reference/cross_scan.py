"""Pure-PyTorch cross-scan / cross-merge, any device.

cross_scan unfolds an image into K directional sequences of its H*W pixels:
    K=4: row-major, column-major, row-major reversed, column-major reversed
    K=2: row-major and its reverse (bidirectional)      K=1: row-major
Output (batch, K, C, L). ``channels_last`` says the image is (batch, H, W, C) instead of
(batch, C, H, W). cross_merge maps every sequence back to its pixels and sums the K of them:
it is the adjoint (transpose) of cross_scan, so each is the other's backward.
"""
from __future__ import annotations

import torch
from torch import Tensor

SCAN_DIRECTIONS = (1, 2, 4)


def _check_directions(directions: int) -> None:
    if directions not in SCAN_DIRECTIONS:
        raise ValueError(f"scan_directions must be one of {SCAN_DIRECTIONS}, got {directions}")


def cross_scan(x: Tensor, directions: int, channels_last: bool) -> Tensor:
    _check_directions(directions)
    if channels_last:
        x = x.permute(0, 3, 1, 2)
    batch, channels, height, width = x.shape
    rows = x.reshape(batch, channels, height * width)
    if directions == 1:
        # a copy (custom ops must not return views of their inputs), contiguous as the fake promises
        return rows.unsqueeze(1).clone(memory_format=torch.contiguous_format)
    if directions == 2:
        return torch.stack([rows, rows.flip(-1)], dim=1)
    cols = x.transpose(2, 3).reshape(batch, channels, height * width)
    return torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)


def cross_merge(y: Tensor, height: int, width: int, directions: int, channels_last: bool) -> Tensor:
    _check_directions(directions)
    batch, k, channels, length = y.shape
    if k != directions or length != height * width:
        raise ValueError(f"cross_merge expects (batch, {directions}, C, {height * width}), got {tuple(y.shape)}")
    rows = y[:, 0]
    if directions >= 2:
        back = y[:, 1] if directions == 2 else y[:, 2]
        rows = rows + back.flip(-1)
    out = rows.view(batch, channels, height, width)
    if directions == 4:
        cols = (y[:, 1] + y[:, 3].flip(-1)).view(batch, channels, width, height)
        out = out + cols.transpose(2, 3)
    out = out.permute(0, 2, 3, 1) if channels_last else out
    return out.clone(memory_format=torch.contiguous_format) if directions == 1 else out.contiguous()


def scan_order(height: int, width: int, directions: int, device=None) -> Tensor:
    """(K, L) pixel index (row-major) visited at each step of each direction."""
    _check_directions(directions)
    idx = torch.arange(height * width, device=device).view(height, width)
    rows, cols = idx.reshape(-1), idx.t().reshape(-1)
    orders = {1: [rows], 2: [rows, rows.flip(0)], 4: [rows, cols, rows.flip(0), cols.flip(0)]}[directions]
    return torch.stack(orders)
