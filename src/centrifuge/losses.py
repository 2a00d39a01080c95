"""The paper's losses: Eq. 3 (L1 + gradient reconstruction loss) and Eq. 2 (permutation-invariant loss).

Shapes: videos are ``[..., 3, T, H, W]``; a set of ``n`` layers is ``[B, n, 3, T, H, W]``.

Besides the paper: an optional **tone-free term** (:func:`tone_free_loss`), Eq. 3 after each output is re-toned
towards its target by its best gain and offset per colour channel. It is the image counterpart of the
scale-invariant SDR of audio separation: every re-toned copy of the blend scores alike on it, so it rewards an
output only for holding the target's content (``centrifuge.tone`` measures the same question on results).
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable

import torch

from .tone import affine_fit

log = logging.getLogger("centrifuge")


def _abs_mean(x: torch.Tensor) -> torch.Tensor:
    return x.abs().mean(dim=(-4, -3, -2, -1))


def reconstruction_loss(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Eq. 3: ``l(U, V) = 1/(2T) sum_t (||U_t - V_t||_1 + ||grad U_t - grad V_t||_1)``.

    ``||.||_1`` is the mean absolute value over pixels and channels of a frame; ``grad`` is the spatial
    gradient by forward finite differences, and its norm adds the x and y parts. Averaging the per-frame
    terms over ``t`` and halving gives the ``1/(2T)`` factor.

    Args:
        u, v: ``[..., 3, T, H, W]`` (broadcastable).

    Returns:
        ``[...]``: one loss per video.
    """
    d = u - v
    dx = d[..., :, 1:] - d[..., :, :-1]
    dy = d[..., 1:, :] - d[..., :-1, :]
    return 0.5 * (_abs_mean(d) + _abs_mean(dx) + _abs_mean(dy))


def tone_free_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 3 between ``targets`` and ``outputs`` re-toned by the least-squares gain and offset per colour channel
    over the whole clip (``centrifuge.tone.affine_fit``, knowing the target): what an output's content is worth,
    whatever its tone. ``[..., 3, T, H, W]`` (broadcastable) ``-> [...]``."""
    return reconstruction_loss(affine_fit(outputs, targets, (-3, -2, -1)), targets)


def output_loss(outputs: torch.Tensor, targets: torch.Tensor, tone_free: float = 0.0) -> torch.Tensor:
    """What training minimises between an output and a target: Eq. 3, plus ``tone_free`` times
    :func:`tone_free_loss` (0: the paper's loss alone). ``[..., 3, T, H, W]`` (broadcastable) ``-> [...]``."""
    loss = reconstruction_loss(outputs, targets)
    return loss + tone_free * tone_free_loss(outputs, targets) if tone_free else loss


def pairwise_loss(outputs: torch.Tensor, targets: torch.Tensor, tone_free: float = 0.0) -> torch.Tensor:
    """Eq. 3 (:func:`output_loss`) between every output and every target.

    Args:
        outputs: ``[B, n, 3, T, H, W]``.
        targets: ``[B, k, 3, T, H, W]``.
        tone_free: weight of the tone-free term (:func:`output_loss`).

    Returns:
        ``[B, n, k]`` with entry ``[b, i, j] = l(targets[b, j], outputs[b, i])``.
    """
    # One target at a time keeps memory at O(B n T H W) instead of O(B n k T H W); k is small.
    cols = [output_loss(outputs, targets[:, j : j + 1], tone_free) for j in range(targets.shape[1])]
    return torch.stack(cols, dim=-1)


#: Injective maps of k targets into n outputs, by ``(n, k, device)``. A plain dict rather than ``lru_cache``:
#: torch.compile reads a filled entry as a constant instead of tracing through the cache wrapper.
_ASSIGNMENTS: dict[tuple[int, int, str], torch.Tensor] = {}


def _assignments(n: int, k: int, device: str) -> torch.Tensor:
    """All injective maps of ``k`` targets into ``n`` outputs: ``[P, k]`` output indices."""
    key = (n, k, device)
    if key not in _ASSIGNMENTS:
        if k > n:
            raise ValueError(f"cannot assign {k} targets to {n} outputs")
        # Cached across calls: an inference tensor (made under inference_mode) would break later training steps.
        with torch.inference_mode(False):
            _ASSIGNMENTS[key] = torch.tensor(list(itertools.permutations(range(n), k)), dtype=torch.long,
                                             device=device)
    return _ASSIGNMENTS[key]


def pit_from_matrix(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Permutation-invariant reduction of a pairwise loss matrix.

    Args:
        matrix: ``[B, n, k]`` (``n >= k``) as returned by :func:`pairwise_loss`.

    Returns:
        ``(loss [B], assignment [B, k])``: the smallest summed loss over injective assignments and, for each
        target ``j``, the index of the output matched to it.
    """
    b, n, k = matrix.shape
    perms = _assignments(n, k, str(matrix.device))  # [P, k]
    cols = torch.arange(k, device=matrix.device)
    totals = matrix[:, perms, cols].sum(dim=-1)  # [B, P]
    loss, best = totals.min(dim=1)
    return loss, perms[best]


def pit_loss(outputs: torch.Tensor, targets: torch.Tensor,
             tone_free: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2, generalised to ``n >= k``: ``min over injective sigma of sum_j l(V_j, O_sigma(j))``.

    For ``k = 2`` this is the paper's ``min_{i != j} l(V1, O_i) + l(V2, O_j)``.

    Args:
        outputs: ``[B, n, 3, T, H, W]``.
        targets: ``[B, k, 3, T, H, W]``.
        tone_free: weight of the tone-free term in ``l`` (:func:`output_loss`; 0: the paper's Eq. 3).

    Returns:
        ``(loss [B], assignment [B, k])``; average ``loss`` over the batch for training.
    """
    if not (torch.is_grad_enabled() and outputs.requires_grad):
        return pit_from_matrix(pairwise_loss(outputs, targets, tone_free))
    # The gradient of the minimum is that of the chosen assignment only: choosing it on a matrix computed
    # without autograd, then differentiating just the k chosen pairs, gives the same loss and gradients at a
    # third of the cost (autograd through all n * k pairs dominated a small model's training step).
    with torch.no_grad():
        _, assignment = pit_from_matrix(pairwise_loss(outputs, targets, tone_free))
    index = assignment[:, :, None, None, None, None].expand(-1, -1, *outputs.shape[2:])
    return output_loss(outputs.gather(1, index), targets, tone_free).sum(dim=1), assignment


#: Values of each row taken at a time by :func:`pairwise_abs_sums`: a block of all ``n`` rows and the buffer of
#: one row against the later ones stay in the cache while every pair is formed (a pass over whole rows per pair,
#: with a fresh temporary each time, was three times slower on the statistics of ``separate``).
PAIR_BLOCK = 1 << 15


def pairwise_abs_sums(rows: torch.Tensor) -> torch.Tensor:
    """``sum_p |rows[i, p] - rows[j, p]|`` for every two rows of ``rows`` ``[n, N]``: ``[n, n]``, symmetric, zero
    on the diagonal, float64. On the CPU summed per block of :data:`PAIR_BLOCK` values in the rows' dtype and
    across blocks in float64; on a GPU, which has no such cache to keep, in one block."""
    n, size = rows.shape
    step = PAIR_BLOCK if rows.device.type == "cpu" else max(size, 1)
    upper = torch.zeros(n, n, dtype=torch.float64, device=rows.device)
    buf = torch.empty(max(n - 1, 0), min(step, size), dtype=rows.dtype, device=rows.device)
    for a in range(0, size, step):
        block = rows[:, a:a + step]
        for i in range(n - 1):  # row i against every later row at once
            diff = torch.sub(block[i + 1:], block[i], out=buf[:n - 1 - i, :block.shape[1]])
            upper[i, i + 1:] += diff.abs_().sum(dim=1)
    return upper + upper.T


def pairwise_reconstruction_distance(layers: torch.Tensor) -> torch.Tensor:
    """Eq. 3 between every two of ``n`` layers, ``[n, 3, T, H, W] -> [n, n]`` (float64): entry
    ``[i, j] = reconstruction_loss(layers[i], layers[j])``, symmetric, zero on the diagonal.

    Blocked and vectorised over the pairs: the difference of two layers' gradients is the gradient of their
    difference, so each of Eq. 3's three terms (values, x and y differences) is taken once per layer and
    compared pairwise (:func:`pairwise_abs_sums`), instead of forming every pair's difference video. Not
    differentiable (the blocks are summed into a preallocated matrix): training's :func:`pit_loss` keeps
    :func:`pairwise_loss`. Equal to :func:`reconstruction_loss` per pair to float rounding (tests/test_losses.py).
    """
    n = layers.shape[0]
    terms = (layers, layers[..., :, 1:] - layers[..., :, :-1], layers[..., 1:, :] - layers[..., :-1, :])
    means = [pairwise_abs_sums(t.reshape(n, -1)) / max(t[0].numel(), 1) for t in terms]
    return 0.5 * (means[0] + means[1] + means[2])


def layer_distances(outputs: torch.Tensor) -> torch.Tensor:
    """``[B, n, n]`` matrix of ``l(O_i, O_j)`` between the output layers of each sample (symmetric), in
    ``outputs``' dtype: :func:`pairwise_reconstruction_distance` per sample, without autograd."""
    with torch.no_grad():
        return torch.stack([pairwise_reconstruction_distance(o) for o in outputs.detach()]).to(outputs.dtype)


def diversity(outputs: torch.Tensor) -> torch.Tensor:
    """Sec. 4.2 diversity score ``min_{i != j} l(O_i, O_j)`` per sample: ``[B]``."""
    d = layer_distances(outputs)
    n = d.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=d.device)
    return d.masked_fill(eye, float("inf")).flatten(1).min(dim=1).values


def most_dissimilar_pair(outputs: torch.Tensor) -> torch.Tensor:
    """Sec. 3.2: the two output layers farthest apart under Eq. 3. Returns ``[B, 2]`` indices (i < j)."""
    return farthest_pair(layer_distances(outputs))


def farthest_pair(distances: torch.Tensor) -> torch.Tensor:
    """The pair ``i < j`` with the largest ``distances[b, i, j]`` (``[B, n, n]``, e.g. accumulated over a
    whole video): ``[B, 2]`` indices."""
    n = distances.shape[-1]
    upper = torch.ones(n, n, dtype=torch.bool, device=distances.device).triu(1)
    flat = distances.masked_fill(~upper, float("-inf")).flatten(1).argmax(dim=1)
    return torch.stack([flat // n, flat % n], dim=1)


def assign_slots(matrix: torch.Tensor) -> list[int]:
    """Slot order ``perm`` minimising ``sum_j matrix[perm[j], j]`` (``matrix[i, j]``: output i vs reference j).

    Exhaustive (:func:`pit_from_matrix`) for ``n <= 8``; above, ``n!`` is too many, and greedy on the smallest
    remaining distance is good enough for well-separated layers.
    """
    n = matrix.shape[0]
    if n <= 8:
        return pit_from_matrix(matrix[None].float())[1][0].tolist()
    perm = [-1] * n
    m = matrix.clone().float()
    for _ in range(n):
        flat = int(m.argmin())
        i, j = divmod(flat, n)
        perm[j] = i
        m[i, :] = float("inf")
        m[:, j] = float("inf")
    return perm


def identity_outputs(mix: torch.Tensor, n: int = 2) -> torch.Tensor:
    """The identity baseline of Table 1: every output layer is the blended input. ``[B,3,T,H,W] -> [B,n,...]``."""
    return mix.unsqueeze(1).expand(-1, n, -1, -1, -1, -1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of videos in [-1, 1], measured on pixels mapped to [0, 1]: ``[..., 3, T, H, W] -> [...]``."""
    return psnr_from_mse((((a - b) / 2).clamp(-1, 1) ** 2).mean(dim=(-4, -3, -2, -1)))


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB from the mean squared error of pixels in [0, 1] (peak 1); at most 100 dB."""
    return -10 * torch.log10(mse.clamp_min(1e-10))


PitLoss = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def compiled_pit_loss(n_outputs: int, targets_shape: tuple[int, ...],
                      device: str | torch.device = "cpu", tone_free: float = 0.0) -> PitLoss:
    """:func:`pit_loss` compiled with ``torch.compile`` for training on fixed shapes, or itself if that fails.

    ``targets_shape`` is the training batch's ``[B, k, 3, T, H, W]``; the outputs are ``[B, n_outputs, 3, T,
    H, W]``. Eager, Eq. 3 is a chain of memory-bound element-wise passes (difference, two finite differences,
    absolute values, means) over every output/target pair; on a 2-core CPU they took about half of a
    ``cpu-small`` training step. Inductor fuses each chain into one pass (docs/performance.md). The compiled
    function is tried once, forward and backward, on zeros of these shapes (the first real step may compile
    again for its outputs' memory layout); where compiling is not possible (no C++ compiler, no Triton) the
    eager loss is returned with a warning. ``k > n_outputs`` is an error, as in :func:`pit_loss`. ``tone_free``
    is the weight of the tone-free term (:func:`output_loss`).
    """
    loss = functools.partial(pit_loss, tone_free=tone_free) if tone_free else pit_loss
    outputs = torch.zeros(targets_shape[0], n_outputs, *targets_shape[2:], device=device, requires_grad=True)
    _assignments(n_outputs, targets_shape[1], str(outputs.device))  # filled before tracing; checks k <= n
    compiled = torch.compile(loss, dynamic=False)
    try:
        compiled(outputs, torch.zeros(targets_shape, device=device))[0].sum().backward()
    except Exception as e:  # noqa: BLE001 - any compiler failure means: use the eager loss
        log.warning("torch.compile of the loss failed, training with the eager loss (%s)",
                    (str(e).strip().splitlines() or [type(e).__name__])[0][:200])
        return loss
    return compiled
