"""A batched closed-form SVD of 2x2 matrices that reproduces LAPACK's singular vectors, signs included.

The region shapes of the published models are ``U diag(sqrt(S))`` from the SVD of each region's covariance
(docs/method.md §2), and the signs of U's columns are part of what the weights expect: they were trained with the
CPU LAPACK ``gesdd`` that ``torch.linalg.svd`` calls. Sending millions of 2x2 matrices to LAPACK costs a
device-to-host round trip on GPUs, and another SVD (cuSOLVER's) picks other signs. This module follows the
steps ``gesdd`` takes for a 2x2 matrix, as element-wise tensor arithmetic on the tensor's own device:

1. A Householder reflection ``H = I - tau v v^T`` (v = (1, v2)) zeroes the lower-left entry, giving the upper
   bidiagonal ``[[f, g], [0, h]]`` (LAPACK's ``gebrd``).
2. The 2x2 bidiagonal SVD by the standard stable formulas with their sign conventions (LAPACK's ``lasv2``),
   giving the left rotation ``[[cl, -sl], [sl, cl]]`` and signed singular values; signs go to V, never to U.
   When g is negligible the matrix is already diagonal: U only reorders the two values.
3. ``U = H @ rotation``; singular values are the absolute values, largest first.

Away from exactly singular matrices it agrees with ``torch.linalg.svd`` on the CPU to float rounding;
``tests/test_svd.py`` checks it on random and region-like covariances.
"""
import torch


def _sign(x):
    """Fortran's SIGN(1, x): +1 for x >= 0, -1 for x < 0."""
    return torch.where(x < 0, -torch.ones_like(x), torch.ones_like(x))


def _safe(x):
    """x where it is non-zero, else 1: a divisor for branches whose result is discarded when x == 0."""
    return torch.where(x == 0, torch.ones_like(x), x)


def _householder(a11, a12, a21, a22):
    """Step 1: reflect the first column onto the x axis. Returns (tau, v2) of H and the bidiagonal (f, g, h)."""
    reflect = a21 != 0
    big, small = torch.maximum(a11.abs(), a21.abs()), torch.minimum(a11.abs(), a21.abs())
    norm = big * torch.sqrt(1 + (small / _safe(big)) ** 2)  # |(a11, a21)| without overflow
    beta = torch.where(reflect, -_sign(a11) * norm, a11)
    tau = torch.where(reflect, (beta - a11) / _safe(beta), torch.zeros_like(a11))
    v2 = torch.where(reflect, a21 * (1 / _safe(a11 - beta)), torch.zeros_like(a11))
    w = a12 + v2 * a22  # v^T (second column)
    return tau, v2, beta, a12 + (-tau * w), a22 + v2 * (-tau * w)


def _bidiagonal_left_rotation(f, g, h):
    """Step 2: SVD of [[f, g], [0, h]]. Returns (cos, sin) of the left rotation and |largest|, |smallest|."""
    one = torch.ones_like(f)
    swap = h.abs() > f.abs()  # work with |ft| >= |ht|
    ft, ht = torch.where(swap, h, f), torch.where(swap, f, h)
    fa, ha, ga = ft.abs(), ht.abs(), g.abs()

    # General case.
    d = fa - ha
    l = torch.where(d == fa, one, d / _safe(fa))
    m = g / _safe(ft)
    t = 2 - l
    s = torch.sqrt(t * t + m * m)
    r = torch.where(l == 0, m.abs(), torch.sqrt(l * l + m * m))
    a = 0.5 * (s + r)
    t_tiny_m = torch.where(l == 0, 2 * _sign(ft) * _sign(g), g / _safe(d.abs() * _sign(ft)) + m / t)
    t = torch.where(m * m == 0, t_tiny_m, (m / (s + t) + m / (r + l)) * (1 + a))
    length = torch.sqrt(t * t + 4)
    crt, srt = 2 / length, t / length
    clt, slt = (crt + srt * m) / a, (ht / _safe(ft)) * srt / a
    ssmax, ssmin = fa * a, ha / a

    # |g| so large that f/g underflows against machine precision.
    eps = torch.finfo(f.dtype).eps / 2
    huge_g = (ga > fa) & (fa / _safe(ga) < eps)
    ssmax = torch.where(huge_g, ga, ssmax)
    ssmin = torch.where(huge_g, torch.where(ha > 1, fa / (ga / _safe(ha)), (fa / _safe(ga)) * ha), ssmin)
    clt, slt = torch.where(huge_g, one, clt), torch.where(huge_g, ht / _safe(g), slt)
    crt, srt = torch.where(huge_g, ft / _safe(g), crt), torch.where(huge_g, one, srt)

    # Already diagonal.
    diagonal = ga == 0
    ssmax, ssmin = torch.where(diagonal, fa, ssmax), torch.where(diagonal, ha, ssmin)
    clt, slt = torch.where(diagonal, one, clt), torch.where(diagonal, torch.zeros_like(f), slt)
    srt, crt = torch.where(diagonal, torch.zeros_like(f), srt), torch.where(diagonal, one, crt)

    cos_left, sin_left = torch.where(swap, srt, clt), torch.where(swap, crt, slt)

    # A negligible g splits the matrix into two 1x1 blocks (LAPACK's bdsqr): no rotation, only a reordering
    # of the two values, which swaps U's columns without a sign change.
    eps, tiny = torch.finfo(f.dtype).eps / 2, torch.finfo(f.dtype).tiny
    f_abs, h_abs = f.abs(), h.abs()
    smallest = torch.minimum(f_abs, h_abs * (f_abs / _safe(f_abs + ga))) / 2 ** 0.5
    split = ga <= torch.clamp(10 * eps * smallest, min=24 * tiny)
    reorder = h_abs > f_abs
    cos_left = torch.where(split, torch.where(reorder, torch.zeros_like(f), one), cos_left)
    sin_left = torch.where(split, torch.where(reorder, one, torch.zeros_like(f)), sin_left)
    # The split reorder is a reflection [[0, 1], [1, 0]], not a rotation: flag it for the caller.
    return cos_left, sin_left, ssmax, ssmin, split & reorder


def svd_2x2(matrix):
    """Left singular vectors and singular values of 2x2 matrices.

    Args:
        matrix: (..., 2, 2) floating tensor on any device.
    Returns:
        u (..., 2, 2) with the signs LAPACK's ``gesdd`` gives, s (..., 2) in decreasing order.
    """
    a11, a12 = matrix[..., 0, 0], matrix[..., 0, 1]
    a21, a22 = matrix[..., 1, 0], matrix[..., 1, 1]
    tau, v2, f, g, h = _householder(a11, a12, a21, a22)
    c, s, ssmax, ssmin, permuted = _bidiagonal_left_rotation(f, g, h)
    # U = H @ [[c, -s], [s, c]], each column x becoming x - tau (1, v2) ((1, v2) . x), in LAPACK's order.
    columns = []
    second = torch.where(permuted, s, -s), torch.where(permuted, torch.zeros_like(c), c)  # [[0, 1], [1, 0]]
    for top, bottom in ((c, s), second):
        w = -tau * (top + v2 * bottom)
        columns.append(torch.stack([top + w, bottom + v2 * w], dim=-1))  # (..., 2)
    u = torch.stack(columns, dim=-1)  # (..., 2, 2)
    return u, torch.stack([ssmax.abs(), ssmin.abs()], dim=-1)  # (..., 2, 2), (..., 2)
