"""The VDM: the learned schedule, the ELBO's terms (discrete -> continuous, closed forms,
float32 under bf16), the sampler's determinism and batch independence, and a tiny model
that learns."""

import math

import pytest
import torch

from conceptspace.unet import UNet
from conceptspace.vdm import VDM, alpha_sigma, antithetic_times, snap_to_grid

H_DIM = 4
IMAGE_SIZE = 8


def tiny_vdm(seed=0, randomize=True, **vdm_kwargs):
    torch.manual_seed(seed)
    net = UNet(
        H_DIM,
        IMAGE_SIZE,
        channels=(8, 16),
        blocks_per_level=1,
        groups=4,
        attention_heads=2,
        dropout=0.0,
        time_dim=16,
    )
    if randomize:  # move the zero-initialised convs so that eps_hat depends on z, t and h
        with torch.no_grad():
            for parameter in net.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
    return VDM(net, **vdm_kwargs)


def batch(n, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    h = torch.rand(n, H_DIM, generator=generator)
    return x, h


def seeded(seed):
    return torch.Generator().manual_seed(seed)


# torch at one thread for the whole module (conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------- the schedule


def test_schedule_is_monotone_with_the_configured_end_points():
    vdm = tiny_vdm(gamma_min=-5.0, gamma_max=10.0)
    t = torch.linspace(0, 1, 101)
    with torch.no_grad():
        gamma = vdm.gamma(t)
        assert gamma[0].item() == pytest.approx(-5.0)
        assert gamma[-1].item() == pytest.approx(10.0)
        assert (gamma.diff() > 0).all()
        alpha, sigma = alpha_sigma(gamma)
        torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t))  # variance kept
        assert (sigma.diff() > 0).all()  # noise grows with t

        vdm.gamma_slope.neg_()  # w < 0: gamma(t) = b + |w| t still rises
        assert (vdm.gamma(t).diff() > 0).all()
        torch.testing.assert_close(vdm.gamma(t), gamma)


def test_schedule_parameters_are_trained_with_the_net():
    vdm = tiny_vdm()
    names = {name for name, _ in vdm.named_parameters()}
    assert {"gamma_bias", "gamma_slope"} <= names
    assert any(name.startswith("net.embedding.") for name in names)
    x, h = batch(4)
    vdm.loss(x, h)["loss"].backward()
    assert vdm.gamma_bias.grad is not None and vdm.gamma_bias.grad != 0
    assert vdm.gamma_slope.grad is not None and vdm.gamma_slope.grad != 0


# ------------------------------------------------------------------------- the loss


def test_antithetic_times_cover_the_unit_interval_evenly():
    t = antithetic_times(8, torch.device("cpu"), seeded(0))
    assert ((t >= 0) & (t < 1)).all()
    torch.testing.assert_close(t.sort().values.diff(), torch.full((7,), 1 / 8))
    grid = snap_to_grid(torch.tensor([0.0, 0.05, 0.999999, 0.5]), 10)
    torch.testing.assert_close(grid, torch.tensor([0.1, 0.1, 1.0, 0.6]))


def test_discrete_diffusion_loss_approaches_the_continuous_one():
    """Same net, x, t0 and eps: L_T -> L_inf from above (VDM: more steps, tighter bound).
    For the linear schedule the weight ratio is T expm1(|w| / T) / |w| (2.3 at T = 10); the
    losses follow it up to the change of eps_hat between t and its grid point."""
    vdm = tiny_vdm()
    x, h = batch(16)
    slope = vdm.gamma_max - vdm.gamma_min
    with torch.no_grad():
        continuous = vdm.loss(x, h, generator=seeded(7))["diffusion"].item()
        gaps = []
        for steps in (10, 100, 1000):
            discrete = vdm.loss(x, h, discrete_steps=steps, generator=seeded(7))["diffusion"]
            ratio = discrete.item() / continuous
            assert ratio == pytest.approx(steps * math.expm1(slope / steps) / slope, rel=0.15)
            gaps.append(ratio - 1)
    assert gaps[0] > gaps[1] > gaps[2] > 0, gaps
    assert gaps[2] < 0.01 * gaps[0] and gaps[2] < 0.02, gaps


def test_terms_are_bits_per_dim_and_sum_to_the_loss():
    vdm = tiny_vdm()
    x, h = batch(6)
    terms = vdm.loss(x, h, generator=seeded(3))
    assert set(terms) == {"diffusion", "prior", "reconstruction", "loss"}
    assert all(term.ndim == 0 and term.dtype == torch.float32 for term in terms.values())
    total = terms["diffusion"] + terms["prior"] + terms["reconstruction"]
    torch.testing.assert_close(terms["loss"], total)

    # prior: KL(N(alpha_1 x, sigma_1^2) || N(0, 1)) against torch.distributions
    dims = 3 * IMAGE_SIZE**2
    with torch.no_grad():  # in float64, where the textbook formula is accurate enough
        alpha_1, sigma_1 = alpha_sigma(vdm.gamma(torch.tensor(1.0)).double())
        q = torch.distributions.Normal(alpha_1 * (2 * x.double() - 1), sigma_1)
        kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0))
        expected_prior = kl.flatten(1).sum(1).mean() / (dims * math.log(2))
    assert terms["prior"].item() == pytest.approx(expected_prior.item(), rel=1e-4)


def test_reconstruction_is_the_expected_gaussian_decoder_nll():
    """The closed form equals a Monte Carlo estimate of -E log N(x; z_0 / alpha_0, s^2)."""
    vdm = tiny_vdm(reconstruction_sigma=0.05)
    x, h = batch(2)
    x = 2 * x - 1
    with torch.no_grad():
        alpha_0, sigma_0 = alpha_sigma(vdm.gamma(torch.tensor(0.0)))
        eps = torch.randn(4000, *x.shape[1:], generator=seeded(0))
        z_0 = alpha_0 * x[:1] + sigma_0 * eps
        decoder = torch.distributions.Normal(z_0 / alpha_0, 0.05)
        monte_carlo = -decoder.log_prob(x[:1]).mean() / math.log(2)
        closed_form = vdm.loss(*batch(2))["reconstruction"]
    torch.testing.assert_close(closed_form, monte_carlo, rtol=1e-2, atol=0)


def test_loss_is_deterministic_for_a_generator_and_layout_independent():
    vdm = tiny_vdm()
    x, h = batch(4)
    first = vdm.loss(x, h, generator=seeded(5))["loss"]
    assert torch.equal(vdm.loss(x, h, generator=seeded(5))["loss"], first)
    assert not torch.equal(vdm.loss(x, h, generator=seeded(6))["loss"], first)
    torch.manual_seed(11)
    global_rng = vdm.loss(x, h)["loss"]
    torch.manual_seed(11)
    assert torch.equal(vdm.loss(x, h)["loss"], global_rng)
    # channels_last input: the same noise lands on the same pixels
    vdm_cl = vdm.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(vdm_cl.loss(x_cl, h, generator=seeded(5))["loss"], first)


def test_loss_stays_float32_under_bf16_autocast():
    vdm = tiny_vdm()
    x, h = batch(8)
    with torch.no_grad():
        reference = vdm.loss(x, h, generator=seeded(2))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            terms = vdm.loss(x, h, generator=seeded(2))
    assert all(term.dtype == torch.float32 for term in terms.values())
    assert torch.isfinite(terms["loss"])
    torch.testing.assert_close(terms["reconstruction"], reference["reconstruction"])
    torch.testing.assert_close(terms["diffusion"], reference["diffusion"], rtol=0.05, atol=0)


# ------------------------------------------------------------------------- sampling


def test_sampler_is_deterministic_and_independent_of_the_batch():
    vdm = tiny_vdm()
    vdm.train()
    _, h = batch(3)
    together = vdm.sample(h, 8, [seeded(s) for s in (10, 11, 12)])
    assert vdm.training  # mode restored
    assert together.shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert together.min() >= 0 and together.max() <= 1
    again = vdm.sample(h, 8, [seeded(s) for s in (10, 11, 12)])
    assert torch.equal(together, again)
    other_seed = vdm.sample(h[1:2], 8, [seeded(99)])
    assert not torch.allclose(other_seed[0], together[1])
    alone = vdm.sample(h[1:2], 8, [seeded(11)])
    torch.testing.assert_close(alone[0], together[1], rtol=0, atol=1e-5)
    # the same sample in another batch, at another position, with other prompts
    _, other_h = batch(4, seed=5)
    mixed_h = torch.cat([other_h[:2], h[1:2], other_h[2:]])
    mixed = vdm.sample(mixed_h, 8, [seeded(s) for s in (20, 21, 11, 22, 23)])
    torch.testing.assert_close(mixed[2], together[1], rtol=0, atol=1e-5)


def test_sampler_uses_given_embeddings_instead_of_h():
    vdm = tiny_vdm().eval()
    _, h = batch(2)
    from_h = vdm.sample(h, 4, [seeded(1), seeded(2)])
    from_embeddings = vdm.sample(None, 4, [seeded(1), seeded(2)], vdm.net.embed(h))
    assert torch.equal(from_h, from_embeddings)
    shifted = [e + 0.5 for e in vdm.net.embed(h)]
    assert not torch.allclose(vdm.sample(h, 4, [seeded(1), seeded(2)], shifted), from_h)


# ------------------------------------------------------------------------- learning


def disc_images(n, generator):
    """n 8x8 discs: random color on a light background, radius 0.4 or 0.8; h = (rgb, r)."""
    grid = torch.linspace(-1, 1, IMAGE_SIZE)
    radius_2d = (grid[:, None] ** 2 + grid[None, :] ** 2).sqrt()
    color = torch.rand(n, 3, generator=generator)
    radius = torch.where(torch.rand(n, generator=generator) < 0.5, 0.4, 0.8)
    mask = (radius_2d[None] < radius[:, None, None]).float()[:, None]  # (n, 1, S, S)
    images = mask * color[:, :, None, None] + (1 - mask) * 0.9
    return images, torch.cat([color, radius[:, None]], dim=1)


@pytest.mark.parametrize("data_range", [(-1.0, 1.0), (0.0, 1.0)])
def test_a_tiny_model_learns_a_tiny_dataset(data_range):
    """The loss falls, and so does its diffusion term: the reconstruction term alone would
    fall as the schedule lowers gamma(0), the diffusion term only if the network learns.
    On either data scale."""
    vdm = tiny_vdm(randomize=False, data_range=data_range)
    images, h = disc_images(64, seeded(0))
    optimizer = torch.optim.AdamW(vdm.parameters(), lr=3e-3, weight_decay=0.01)
    torch.manual_seed(0)
    history = {"loss": [], "diffusion": []}
    for _ in range(200):
        index = torch.randint(len(images), (16,))
        terms = vdm.loss(images[index], h[index])
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        for name in history:
            history[name].append(terms[name].item())
    for name, values in history.items():
        first, last = sum(values[:20]) / 20, sum(values[-20:]) / 20
        assert last < 0.75 * first, f"{name}: first 20 steps {first:.3f}, last 20 {last:.3f}"


# ------------------------------------------------------------------------- the data scale


@pytest.mark.parametrize("data_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_data_range_round_trips_and_maps_the_image_ends(data_range):
    vdm = tiny_vdm(data_range=data_range)
    x, _ = batch(3)
    assert torch.allclose(vdm.to_image_scale(vdm.to_model_scale(x)), x, atol=1e-7)
    ends = vdm.to_model_scale(torch.tensor([0.0, 1.0]))
    assert ends.tolist() == list(data_range)


def test_loss_sees_the_images_on_the_configured_scale():
    """[-1, 1] on x is [0, 1] on 2 x - 1, term by term, with the same noise; and the two
    scales give different losses for the same images (the option is not ignored)."""
    x, h = batch(4)

    def terms(vdm, images):
        return {k: v.item() for k, v in vdm.loss(images, h, generator=seeded(5)).items()}

    plus_minus = terms(tiny_vdm(data_range=(-1.0, 1.0)), x)
    unit = tiny_vdm(data_range=(0.0, 1.0))
    assert terms(unit, 2.0 * x - 1.0) == pytest.approx(plus_minus, rel=1e-5)
    assert terms(unit, x)["prior"] != pytest.approx(plus_minus["prior"], rel=1e-3)


def test_sampler_maps_back_from_the_configured_scale():
    """The same network and noise give the same z_0 whatever the scale; the images differ
    by the scales' mapping back: (y + 100) / 200 against (y + 50) / 200 (no clamping)."""
    h = torch.rand(3, H_DIM, generator=seeded(2))
    first = tiny_vdm(data_range=(-100.0, 100.0)).sample(h, 4, [seeded(i) for i in range(3)])
    second = tiny_vdm(data_range=(-50.0, 150.0)).sample(h, 4, [seeded(i) for i in range(3)])
    assert 0.0 < float(first.min()) and float(first.max()) < 1.0
    assert torch.allclose(second, first - 0.25, atol=1e-6)


@pytest.mark.parametrize("data_range", [(1.0, 1.0), (1.0, -1.0), (0.0, 0.5, 1.0)])
def test_bad_data_range_is_refused_by_name(data_range):
    with pytest.raises(ValueError, match="data_range"):
        tiny_vdm(data_range=data_range)
