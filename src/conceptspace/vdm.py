"""Variational Diffusion Model (Kingma et al. 2021, arXiv:2107.00630), continuous time.

Forward process (VDM sec. 3): z_t = alpha_t x + sigma_t eps with gamma(t) = -log SNR(t),
sigma_t^2 = sigmoid(gamma(t)), alpha_t^2 = sigmoid(-gamma(t)). The schedule is learned and
linear, gamma(t) = b + |w| t, initialised to b = gamma_min, w = gamma_max - gamma_min
[authors' code], and trained with the network on the ELBO.

Data: images x in [0, 1] are mapped linearly onto ``data_range`` = [lo, hi] inside
(``loss``) and back (``sample``); every density below, the reconstruction's included,
lives on that scale (config ``model.data_range``). The authors' code feeds [0, 1] images
to its VDM unchanged ([0, 1], the paper-scale default); [-1, 1], the usual choice of
diffusion models, doubles every pixel's distance from the others, so at the same gamma
the signal-to-noise ratio of the data is four times the authors' (as if gamma were lower
by log 4 = 1.39) and the data's mean sits at 0 instead of 0.5.

Loss (the VDM ELBO, sec. 3.5), in bits per dimension (nats / (D ln 2), D = C * H * W):
    diffusion       0.5 gamma'(t) ||eps - eps_hat(z_t; t)||^2            (VDM eq. 17, T -> inf)
                    or, with T steps, 0.5 T expm1(gamma(t) - gamma(t - 1/T)) ||.||^2 with
                    t on the grid i/T, i = 1..T      (VDM sec. 4, eps form)
    prior           KL(q(z_1 | x) || N(0, I))                           (closed form)
    reconstruction  -E_q(z_0|x) log p(x | z_0) with the authors' Gaussian decoder
                    p(x | z_0) = N(x; z_0 / alpha_0, reconstruction_sigma^2). The VDM paper
                    uses a 256-way discrete decoder instead; this Gaussian term is a density
                    on the data_range scale, not a probability, so the "ELBO" is only
                    comparable between runs with the same reconstruction_sigma and data_range.
Times are drawn with the low-discrepancy (antithetic) sampler of the VDM appendix.
The reconstruction term is taken in closed form, its expectation over z_0: the authors'
code uses a one-sample Monte Carlo estimate with the same expectation. With sigma = 1e-3 it
is 0.5 exp(gamma_0) / sigma^2 nats/dim, about 4850 bits/dim at gamma_0 = -5: it dominates
the loss and drives gamma(0) down during training, as in the authors' runs.
eps is drawn in the logical (N, C, H, W) order whatever x's memory format, so a
channels_last batch gets the same noise on the same pixels.

Sampler: ancestral, T steps from t = 1 to 0 (VDM appendix, p(z_s | z_t)):
    c = -expm1(gamma_s - gamma_t)
    z_s = (alpha_s / alpha_t) (z_t - sigma_t c eps_hat) + sqrt(sigma_s^2 c) eps
and the image is x = z_0 / alpha_0 (the decoder's mean), mapped from ``data_range`` back to
[0, 1] and clamped.
(The authors' sampler returns z_0 itself; alpha_0 = 0.997 at gamma_min = -5.)
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def alpha_sigma(gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha = sqrt(sigmoid(-gamma)), sigma = sqrt(sigmoid(gamma)) (VDM sec. 3.2)."""
    return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


def antithetic_times(
    batch: int, device: torch.device, generator: torch.Generator | None = None
) -> torch.Tensor:
    """t_i = (t0 + i / B) mod 1 with one t0 ~ U[0, 1): low-discrepancy times (VDM)."""
    t0 = torch.rand((), device=device, generator=generator)
    return torch.remainder(t0 + torch.arange(batch, device=device) / batch, 1.0)


def snap_to_grid(t: torch.Tensor, steps: int) -> torch.Tensor:
    """Map t in [0, 1) onto the grid i / T, i = 1..T (the discrete-time loss's times)."""
    i = torch.floor(t * steps).clamp(max=steps - 1) + 1
    return i / steps


def per_sample_normal(
    generators: Sequence[torch.Generator], shape: Sequence[int], device: torch.device
) -> torch.Tensor:
    """(len(generators), *shape) standard normals, row i drawn from generators[i] alone, so
    a sample's noise does not depend on the rest of its batch."""
    rows = [torch.randn(tuple(shape), generator=g, device=g.device) for g in generators]
    return torch.stack(rows).to(device)


def same_layout(tensor: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``tensor`` in ``reference``'s memory format (channels_last or default)."""
    if reference.ndim == 4 and not reference.is_contiguous():
        if reference.is_contiguous(memory_format=torch.channels_last):
            return tensor.contiguous(memory_format=torch.channels_last)
    return tensor


# What a model config without model.data_range means: the scale every run used before
# the key existed (their checkpoints load, and resume, with it).
LEGACY_DATA_RANGE = (-1.0, 1.0)


def check_data_range(data_range: Sequence[float]) -> tuple[float, float]:
    """(lo, hi) as floats; a ValueError unless it is two numbers with lo < hi."""
    if len(data_range) != 2 or not float(data_range[0]) < float(data_range[1]):
        raise ValueError(
            f"data_range must be [lo, hi] with lo < hi (e.g. [0, 1] or [-1, 1]), got "
            f"{list(data_range)}"
        )
    return float(data_range[0]), float(data_range[1])


class VDM(nn.Module):
    """A noise-prediction network ``net`` with a learned linear noise schedule.

    ``net(z, t_input, h=..., embeddings=...)`` returns eps_hat, ``net.embed(h)`` the per-
    block embeddings, and ``net.image_channels`` / ``net.image_size`` the image shape
    (``conceptspace.unet.UNet``). The network's time input is
    t_input = (gamma(t) - gamma_min) / (gamma_max - gamma_min), with the configured (not
    the learned) end points. Images in [0, 1] are modelled on the scale ``data_range``.
    """

    def __init__(
        self,
        net: nn.Module,
        gamma_min: float = -5.0,
        gamma_max: float = 10.0,
        reconstruction_sigma: float = 1e-3,
        data_range: Sequence[float] = LEGACY_DATA_RANGE,
    ):
        super().__init__()
        self.data_low, self.data_high = check_data_range(data_range)
        if not gamma_max > gamma_min:
            raise ValueError(f"gamma_max {gamma_max} must exceed gamma_min {gamma_min}")
        if not reconstruction_sigma > 0:
            raise ValueError(f"reconstruction_sigma must be > 0, got {reconstruction_sigma}")
        self.net = net
        self.gamma_min = float(gamma_min)
        self.gamma_max = float(gamma_max)
        self.reconstruction_sigma = float(reconstruction_sigma)
        # gamma(t) = b + |w| t: monotone in t whatever sign w takes during training.
        self.gamma_bias = nn.Parameter(torch.tensor(self.gamma_min))  # b
        self.gamma_slope = nn.Parameter(torch.tensor(self.gamma_max - self.gamma_min))  # w

    # --- the noise schedule

    def gamma(self, t: torch.Tensor) -> torch.Tensor:
        """gamma(t) = -log SNR(t) = b + |w| t."""
        return self.gamma_bias + self.gamma_slope.abs() * t

    def gamma_derivative(self, t: torch.Tensor) -> torch.Tensor:
        """gamma'(t) = |w|, one per time in t."""
        return self.gamma_slope.abs().expand(t.shape)

    def network_time(self, gamma_t: torch.Tensor) -> torch.Tensor:
        """The network's time input, (gamma(t) - gamma_min) / (gamma_max - gamma_min)."""
        return (gamma_t - self.gamma_min) / (self.gamma_max - self.gamma_min)

    # --- the data scale

    def to_model_scale(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the modelled scale [lo, hi] (``data_range``)."""
        return self.data_low + (self.data_high - self.data_low) * x

    def to_image_scale(self, x: torch.Tensor) -> torch.Tensor:
        """The modelled scale [lo, hi] -> images in [0, 1] (not clamped)."""
        return (x - self.data_low) / (self.data_high - self.data_low)

    # --- the ELBO

    def loss(
        self,
        x: torch.Tensor,
        h: torch.Tensor,
        discrete_steps: int | None = None,
        generator: torch.Generator | None = None,
        t: torch.Tensor | None = None,
        eps: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The negative ELBO of images x (B, C, S, S) in [0, 1] given h, in bits/dim.

        Returns batch means: 'diffusion', 'prior', 'reconstruction' and their sum 'loss'.
        ``discrete_steps`` = T gives the discrete-time diffusion loss; None the continuous
        one. t0 and eps come from ``generator`` (else the global RNG), in that order,
        unless given: times ``t`` (B,) used as they are, noise ``eps`` in x's layout (the
        pack trainer draws them from each run's generator, outside its vmapped model).
        """
        x = self.to_model_scale(x.float())
        batch, dims = x.shape[0], x[0].numel()
        bits_per_dim = 1.0 / (dims * math.log(2.0))

        if t is None:
            t = antithetic_times(batch, x.device, generator)
            if discrete_steps is not None:
                t = snap_to_grid(t, discrete_steps)
        if eps is None:
            eps = torch.randn(x.shape, device=x.device, generator=generator)
            eps = same_layout(eps, x)

        diffusion = self.diffusion_loss(x, h, t, eps, discrete_steps)
        terms = {
            "diffusion": diffusion.mean() * bits_per_dim,
            "prior": self.prior_loss(x).mean() * bits_per_dim,
            "reconstruction": self.reconstruction_loss(dims) * bits_per_dim,
        }
        terms["loss"] = terms["diffusion"] + terms["prior"] + terms["reconstruction"]
        return terms

    def diffusion_loss(
        self,
        x: torch.Tensor,
        h: torch.Tensor,
        t: torch.Tensor,
        eps: torch.Tensor,
        discrete_steps: int | None = None,
    ) -> torch.Tensor:
        """Per-sample diffusion loss in nats: w(t) * 0.5 ||eps - eps_hat(z_t; t)||^2."""
        gamma_t = self.gamma(t)
        alpha_t, sigma_t = (v[:, None, None, None] for v in alpha_sigma(gamma_t))
        z_t = alpha_t * x + sigma_t * eps  # q(z_t | x)
        eps_hat = self.net(z_t, self.network_time(gamma_t), h=h).float()
        squared_error = (eps - eps_hat).square().flatten(1).sum(dim=1)
        if discrete_steps is None:
            weight = self.gamma_derivative(t)  # VDM eq. 17
        else:
            # T (SNR(s) / SNR(t) - 1) with s = t - 1/T (VDM sec. 4)
            gamma_s = self.gamma(t - 1.0 / discrete_steps)
            weight = discrete_steps * torch.expm1(gamma_t - gamma_s)
        return 0.5 * weight * squared_error

    def prior_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample KL(N(alpha_1 x, sigma_1^2) || N(0, 1)) in nats, summed over dims."""
        gamma_1 = self.gamma(torch.ones((), device=x.device))
        alpha_squared = torch.sigmoid(-gamma_1)
        # 0.5 (sigma^2 + alpha^2 x^2 - log sigma^2 - 1) with sigma^2 - 1 = -alpha^2 and
        # -log sigma^2 = softplus(-gamma): no cancellation against 1 when sigma_1 ~ 1.
        constant = F.softplus(-gamma_1) - alpha_squared
        kl = 0.5 * (alpha_squared * x.square() + constant)
        return kl.flatten(1).sum(dim=1)

    def reconstruction_loss(self, dims: int) -> torch.Tensor:
        """-E_q(z_0|x) log N(x; z_0 / alpha_0, s^2) in nats per image (the same for every x).

        z_0 / alpha_0 - x = (sigma_0 / alpha_0) eps and (sigma_0 / alpha_0)^2 = exp(gamma_0),
        so per dimension the expectation is 0.5 log(2 pi s^2) + 0.5 exp(gamma_0) / s^2.
        """
        gamma_0 = self.gamma(torch.zeros((), device=self.gamma_bias.device))
        variance = self.reconstruction_sigma**2
        per_dim = 0.5 * math.log(2.0 * math.pi * variance) + 0.5 * torch.exp(gamma_0) / variance
        return dims * per_dim

    # --- sampling

    @torch.no_grad()
    def sample(
        self,
        h: torch.Tensor | None,
        steps: int,
        generators: Sequence[torch.Generator],
        embeddings: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Ancestral samples (B, C, S, S) in [0, 1]: one per generator, prompted by h.

        All noise of sample i (z_1 and every step's eps) comes from ``generators[i]``, so a
        sample does not depend on its batch. ``embeddings`` (the per-block list of
        ``net.embed``, possibly transformed) replaces ``net.embed(h)``; h may then be None.
        The network runs in eval mode; the previous mode is restored. A run alone is a
        pack of one (:func:`sample_runs`).
        """
        if embeddings is None:
            was_training = self.training
            self.eval()
            try:
                embeddings = self.net.embed(h)
            finally:
                self.train(was_training)
        return sample_runs([self], steps, [generators], [embeddings])[0]

    def network_input(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """The network's time input at t, one per sample of a batch."""
        return self.network_time(self.gamma(t)).expand(batch)

    def ancestral_update(
        self,
        z_t: torch.Tensor,
        t: torch.Tensor,
        s: torch.Tensor,
        eps_hat: torch.Tensor,
        generators: Sequence[torch.Generator],
    ) -> torch.Tensor:
        """One draw z_s ~ p(z_s | z_t), s < t, given the network's eps_hat at (z_t, t) (VDM
        appendix; the authors' code cites eq. 34)."""
        gamma_t, gamma_s = self.gamma(t), self.gamma(s)
        alpha_t, sigma_t = alpha_sigma(gamma_t)
        alpha_s, sigma_s = alpha_sigma(gamma_s)
        c = -torch.expm1(gamma_s - gamma_t)
        mean = alpha_s / alpha_t * (z_t - sigma_t * c * eps_hat)
        noise = per_sample_normal(generators, z_t.shape[1:], z_t.device)
        return mean + sigma_s * c.sqrt() * noise


# What gives a sampling step every run's eps_hat: (z_t of each run, network time inputs of
# each run, embeddings of each run) -> eps_hat of each run, in fp32.
EpsNetwork = Callable[
    [Sequence[torch.Tensor], Sequence[torch.Tensor], Sequence[Sequence[torch.Tensor]]],
    Sequence[torch.Tensor],
]


def one_after_another(vdms: Sequence[VDM]) -> EpsNetwork:
    """Each run's eps_hat from its own network, one run after another (what a CPU wants,
    and a run alone)."""

    def eps_hat(z_runs, t_runs, embeddings_runs):
        return [
            vdm.net(z, t, embeddings=embeddings).float()
            for vdm, z, t, embeddings in zip(vdms, z_runs, t_runs, embeddings_runs)
        ]

    return eps_hat


@torch.no_grad()
def sample_runs(
    vdms: Sequence[VDM],
    steps: int,
    generators: Sequence[Sequence[torch.Generator]],
    embeddings: Sequence[Sequence[torch.Tensor]],
    network: EpsNetwork | None = None,
) -> list[torch.Tensor]:
    """Ancestral samples of K runs drawn together: run k's (B_k, C, S, S) in [0, 1], one per
    generator of ``generators[k]``, prompted by its per-block ``embeddings[k]``.

    Each run keeps its own schedule (its learned gamma) and noise (sample i of run k draws
    z_1 and every step's eps from ``generators[k][i]`` alone), so its samples are those it
    draws alone, whatever the pack. Only the network's evaluation is shared: ``network``
    (default :func:`one_after_another`; ``conceptspace.stacked.StackedNetworks`` evaluates all
    runs in one vmapped call). The networks run in eval mode; their modes are restored.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not len(vdms) == len(generators) == len(embeddings):
        raise ValueError(
            f"{len(vdms)} runs with {len(generators)} generator lists and "
            f"{len(embeddings)} embedding lists"
        )
    for run_generators, run_embeddings in zip(generators, embeddings):
        batch = len(run_generators)
        if any(e.shape[0] != batch for e in run_embeddings):
            raise ValueError(f"{batch} generators for a batch of {run_embeddings[0].shape[0]}")
    network = network or one_after_another(vdms)
    modes = [vdm.training for vdm in vdms]
    for vdm in vdms:
        vdm.eval()
    try:
        device = embeddings[0][0].device
        net = vdms[0].net
        shape = (net.image_channels, net.image_size, net.image_size)
        z = [per_sample_normal(g, shape, device) for g in generators]  # z_1 ~ N(0, I)
        times = torch.linspace(1.0, 0.0, steps + 1, device=device)
        for t, s in zip(times[:-1], times[1:]):
            t_inputs = [vdm.network_input(t, len(z_k)) for vdm, z_k in zip(vdms, z)]
            eps_hat = network(z, t_inputs, embeddings)
            z = [
                vdm.ancestral_update(z_k, t, s, eps_k, g)
                for vdm, z_k, eps_k, g in zip(vdms, z, eps_hat, generators)
            ]
        images = []
        for vdm, z_k in zip(vdms, z):
            alpha_0, _ = alpha_sigma(vdm.gamma(times[-1]))
            images.append(vdm.to_image_scale(z_k / alpha_0).clamp(0.0, 1.0))
        return images
    finally:
        for vdm, mode in zip(vdms, modes):
            vdm.train(mode)
