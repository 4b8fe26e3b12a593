"""The closed-form 2x2 SVD used off the CPU reproduces LAPACK's (torch.linalg.svd on the CPU), signs included."""
import numpy as np
import pytest
import torch

from modules.svd import svd_2x2


def affine(u, s):
    return u @ torch.diag_embed(s.sqrt())


def assert_like_lapack(covar, atol=2e-5):
    u_ref, s_ref, _ = torch.linalg.svd(covar)
    u, s = svd_2x2(covar)
    scale = s_ref[..., :1].clamp_min(torch.finfo(covar.dtype).tiny)  # compare relative to the largest value
    assert torch.allclose(s / scale, s_ref / scale, atol=atol)
    assert torch.allclose(u, u_ref, atol=atol), "singular vectors or their signs differ"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1.0, 1e-3, 1e-6])
def test_random_covariances(dtype, scale):
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 2, 2, generator=generator, dtype=dtype) * scale
    covar = a @ a.transpose(-1, -2)
    u_ref, s_ref, _ = torch.linalg.svd(covar)
    well_conditioned = s_ref[:, 1] / s_ref[:, 0] > 1e-3  # exactly singular matrices have no stable small value
    assert_like_lapack(covar[well_conditioned])


def test_region_like_covariances_and_the_parity_affines(parity_dir):
    expected = np.load(parity_dir / "mraa" / "expected.npz")
    for prefix in ("source_region_params", "driving_region_params"):
        covar = torch.from_numpy(expected[f"{prefix}.covar"])
        u, s = svd_2x2(covar)
        assert torch.allclose(affine(u, s), torch.from_numpy(expected[f"{prefix}.affine"]), atol=1e-5)


@pytest.mark.parametrize("matrix", [
    [[2.0, 0.0], [0.0, 1.0]],   # diagonal
    [[1.0, 0.0], [0.0, 3.0]],   # diagonal, larger value second
    [[1.0, 0.5], [0.5, 1.0]],   # equal diagonal
    [[0.1, -0.3], [-0.3, 2.0]],  # |h| > |f| after the reflection
    [[1e-4, 1e-2], [1e-2, 1.0]],
    [[0.0, 0.0], [0.0, 0.0]],
])
def test_special_matrices(matrix):
    covar = torch.tensor([matrix])
    u, s = svd_2x2(covar)
    assert torch.isfinite(u).all() and torch.isfinite(s).all()
    reconstructed = u @ torch.diag_embed(s) @ u.transpose(-1, -2)  # symmetric input: V = U
    assert torch.allclose(reconstructed, covar, atol=1e-6)
    if covar.abs().sum() > 0:
        assert_like_lapack(covar)


def test_runs_on_the_inputs_device_without_host_sync():
    u, s = svd_2x2(torch.empty(7, 3, 2, 2, device="meta"))  # no data: any host round trip would fail here
    assert u.shape == (7, 3, 2, 2) and s.shape == (7, 3, 2) and u.device.type == "meta"


def well_conditioned_covariances(n, seed=0):
    """Covariance-like SPD matrices (float64) with singular values apart from each other and from zero: where
    the SVD is differentiable, with gradients of moderate size."""
    generator = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, generator=generator, dtype=torch.float64) * 2 * torch.pi
    rotation = torch.stack([torch.cos(angle), -torch.sin(angle), torch.sin(angle), torch.cos(angle)], -1)
    rotation = rotation.view(n, 2, 2)  # (n, 2, 2)
    small = 0.02 + 0.3 * torch.rand(n, generator=generator, dtype=torch.float64)  # (n,)
    large = small * (1.5 + 3 * torch.rand(n, generator=generator, dtype=torch.float64))  # ratio in [1.5, 4.5]
    return rotation @ torch.diag_embed(torch.stack([large, small], -1)) @ rotation.transpose(-1, -2)  # (n, 2, 2)


@pytest.mark.parametrize("symmetric_perturbation", [False, True])
def test_backward_matches_lapack_svd_backward(symmetric_perturbation):
    """The closed form is the training path off the CPU: its gradients, through U, S and the region affine
    U sqrt(S), equal those of torch.linalg.svd's backward."""
    covar = well_conditioned_covariances(500)
    generator = torch.Generator().manual_seed(1)
    weight_u = torch.randn(500, 2, 2, generator=generator, dtype=torch.float64)
    weight_s = torch.randn(500, 2, generator=generator, dtype=torch.float64)
    weight_affine = torch.randn(500, 2, 2, generator=generator, dtype=torch.float64)
    gradients = []
    for svd in (lambda m: torch.linalg.svd(m)[:2], svd_2x2):
        leaf = covar.clone().requires_grad_(True)
        matrix = (leaf + leaf.transpose(-1, -2)) / 2 if symmetric_perturbation else leaf
        u, s = svd(matrix)
        loss = (weight_u * u).sum() + (weight_s * s).sum() + (weight_affine * affine(u, s)).sum()
        (gradient,) = torch.autograd.grad(loss, leaf)
        gradients.append(gradient)
    expected, ours = gradients
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours, expected, rtol=1e-7, atol=1e-9), (ours - expected).abs().max()


def test_gradcheck():
    covar = well_conditioned_covariances(6, seed=2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: svd_2x2(m), (covar,))
