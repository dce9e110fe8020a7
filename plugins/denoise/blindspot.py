"""The blind-spot objective (Noise2Void / Noise2Self): learning to denoise from noisy images alone.

A few per cent of the pixels of every training crop are chosen by a
*stratified* mask (one random pixel in every ``box x box`` cell, so the chosen
pixels cover the crop evenly and never clump), their values are *replaced* by
those of a random other pixel of the 5 x 5 neighbourhood (or by the mean of the
8 neighbours), and the loss is the squared error *on those pixels only*, against
their own noisy values. The network never sees the value it must predict, and
with noise that is independent from pixel to pixel and of zero mean (Poisson on
source and sky, sky-subtracted or not, once the level is removed) the best it
can predict is the clean value: no clean image is needed, and nothing biases
the flux (the conditional mean of zero-mean noise is zero, also at a galaxy's
centre).

In flux images the bands are exposed separately, so their noise is independent
too: each band gets its own mask (the other bands of a masked pixel stay
visible, which is allowed and helps). In 8-bit RGB images the stretch mixes the
bands, so a pixel is masked in all its channels at once.
"""

from __future__ import annotations

import math

import torch
from torch import nn

REPLACEMENTS = ("neighbour", "mean")
RADIUS = 2  # neighbours are drawn from the 5 x 5 window around the pixel
_DONUT = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]) / 8.0


def box_for(fraction: float) -> int:
    """The cell side of a stratified mask that selects about ``fraction`` of the pixels (1/32 -> 6 px, 2.8 %)."""
    return max(2, int(round(1.0 / math.sqrt(fraction))))


def stratified_mask(n: int, channels: int, h: int, w: int, box: int, generator: torch.Generator,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool ``n x channels x h x w`` mask with one pixel chosen at random in every ``box x box`` cell."""
    gh, gw = -(-h // box), -(-w // box)
    oy = torch.randint(0, box, (n, channels, gh, gw), generator=generator, device=device)
    ox = torch.randint(0, box, (n, channels, gh, gw), generator=generator, device=device)
    ys = torch.arange(gh, device=device).view(1, 1, gh, 1) * box + oy
    xs = torch.arange(gw, device=device).view(1, 1, 1, gw) * box + ox
    big = torch.zeros((n, channels, gh * box * gw * box), dtype=torch.bool, device=device)
    big.scatter_(2, (ys * (gw * box) + xs).view(n, channels, -1), True)
    return big.view(n, channels, gh * box, gw * box)[:, :, :h, :w].contiguous()


def random_neighbours(x: torch.Tensor, generator: torch.Generator, shared: bool) -> torch.Tensor:
    """For every pixel, the value of a random *other* pixel of its 5 x 5 window (mirrored inwards at the edges).

    With ``shared`` the same neighbour is used for all channels of a pixel.
    """
    n, c, h, w = x.shape
    if h <= RADIUS or w <= RADIUS:
        raise ValueError(f"blind-spot crops need at least {RADIUS + 1} px a side, not {h} x {w}")
    offsets = [(dy, dx) for dy in range(-RADIUS, RADIUS + 1) for dx in range(-RADIUS, RADIUS + 1) if dy or dx]
    table = torch.tensor(offsets, device=x.device)
    pick = torch.randint(0, len(offsets), (n, 1 if shared else c, h, w), generator=generator, device=x.device)
    dy, dx = table[pick, 0], table[pick, 1]
    y = torch.arange(h, device=x.device).view(1, 1, h, 1)
    xx = torch.arange(w, device=x.device).view(1, 1, 1, w)
    ty, tx = y + dy, xx + dx
    ty = torch.where((ty < 0) | (ty >= h), y - dy, ty)  # mirrored inwards: never the pixel itself
    tx = torch.where((tx < 0) | (tx >= w), xx - dx, tx)
    index = (ty * w + tx).expand(n, c, h, w).reshape(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)


def neighbour_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of each pixel's 8 neighbours (mirrored at the edges, so never the pixel itself)."""
    c = x.shape[1]
    kernel = _DONUT.to(x.device, x.dtype).view(1, 1, 3, 3).repeat(c, 1, 1, 1)
    return nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=c)


def mask_and_replace(x: torch.Tensor, fraction: float, generator: torch.Generator, *, per_channel: bool = True,
                     replacement: str = "neighbour") -> tuple[torch.Tensor, torch.Tensor]:
    """(network input with the chosen pixels replaced, the float mask of the chosen pixels), both of ``x``'s shape."""
    if replacement not in REPLACEMENTS:
        raise ValueError(f"replacement must be one of {', '.join(REPLACEMENTS)}, not {replacement!r}")
    n, c, h, w = x.shape
    mask = stratified_mask(n, c if per_channel else 1, h, w, box_for(fraction), generator, x.device)
    mask = mask.expand(n, c, h, w)
    values = random_neighbours(x, generator, shared=not per_channel) if replacement == "neighbour" else neighbour_mean(x)
    return torch.where(mask, values, x), mask.to(x.dtype)


def blind_spot_loss(network: nn.Module, x: torch.Tensor, fraction: float, generator: torch.Generator, *,
                    per_channel: bool = True, replacement: str = "neighbour") -> torch.Tensor:
    """Mean squared error between the network's output on the masked input and ``x``, on the masked pixels only."""
    masked, mask = mask_and_replace(x, fraction, generator, per_channel=per_channel, replacement=replacement)
    err = (network(masked).float() - x) ** 2 * mask
    return err.sum() / mask.sum().clamp(min=1.0)
