"""The conditional U-Net: shapes for 2 and 3 levels, the per-block embedding module, the
embeddings= path, the linear latent intervention, zero-initialised output, bf16 autocast
and channels_last."""

import pytest
import torch

from conceptspace.io import ConceptspaceError
import torch.nn.functional as F

from conceptspace.unet import LinearIntervention, UNet, intervene, sinusoidal_embedding

H_DIM = 4
TINY = dict(groups=4, attention_heads=2, dropout=0.0, time_dim=16)
PAPER_MODEL = {
    "channels": [64, 128, 256],
    "blocks_per_level": 2,
    "groups": 8,
    "attention_heads": 4,
    "dropout": 0.1,
    "time_dim": 256,
    "gamma_min": -5.0,
    "gamma_max": 10.0,
    "reconstruction_sigma": 0.001,
}
# (channels, image_size, blocks_per_level): 2 and 3 levels at 16 and 32 px
CONFIGS = [
    ((8, 16), 16, 1),
    ((8, 16), 32, 2),
    ((8, 16, 32), 16, 1),
    ((8, 16, 32), 32, 2),
]


# torch at one thread for the whole module (conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_net(channels=(8, 16), image_size=16, blocks_per_level=1, seed=0, randomize=True):
    torch.manual_seed(seed)
    net = UNet(H_DIM, image_size, channels=channels, blocks_per_level=blocks_per_level, **TINY)
    if randomize:  # move the zero-initialised convs so that every path reaches the output
        with torch.no_grad():
            for parameter in net.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
    return net.eval()


def inputs(batch, image_size, seed=1):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, 3, image_size, image_size, generator=generator)
    t = torch.rand(batch, generator=generator)
    h = torch.rand(batch, H_DIM, generator=generator)
    return z, t, h


def expected_block_channels(channels, blocks_per_level):
    down = [c for c in channels for _ in range(blocks_per_level)]
    middle = [channels[-1]] * 2
    return down + middle + down[::-1]


@pytest.mark.parametrize("channels, image_size, blocks_per_level", CONFIGS)
def test_shapes_and_one_embedding_per_residual_block(channels, image_size, blocks_per_level):
    net = tiny_net(channels, image_size, blocks_per_level)
    z, t, h = inputs(3, image_size)
    assert net(z, t, h=h).shape == z.shape
    embeddings = net.embed(h)
    expected = expected_block_channels(channels, blocks_per_level)
    assert [tuple(e.shape) for e in embeddings] == [(3, c) for c in expected]
    assert len(net.embedding) == len(expected) == 2 * len(channels) * blocks_per_level + 2
    assert isinstance(net.embedding, torch.nn.ModuleList)


def test_paper_config_has_14_embedding_mlps_and_ignores_vdm_keys():
    net = UNet.from_config(PAPER_MODEL, H_DIM, 32)
    assert len(net.embedding) == 14
    assert net.channels == (64, 128, 256)
    first = net.embedding[0]
    assert [type(m).__name__ for m in first] == ["Linear", "GELU", "Linear", "GELU"]
    assert first[0].in_features == H_DIM and first[0].out_features == 64
    assert net.time_mlp[0].in_features == 64 and net.time_mlp[2].out_features == 256
    z, t, h = inputs(1, 32)
    assert net.eval()(z, t, h=h).shape == (1, 3, 32, 32)


def test_initial_network_returns_its_input_exactly():
    net = tiny_net((8, 16, 32), 16, 2, randomize=False)
    z, t, h = inputs(2, 16)
    assert torch.equal(net(z, t, h=h), z)


def test_embeddings_path_equals_h_path_and_every_embedding_is_used():
    net = tiny_net((8, 16, 32), 16, 1)
    z, t, h = inputs(2, 16)
    reference = net(z, t, h=h)
    assert torch.equal(net(z, t, embeddings=net.embed(h)), reference)
    assert not torch.allclose(net(z, t, h=h.flip(0)), reference)  # h matters
    assert not torch.allclose(net(z, t.flip(0), h=h), reference)  # time matters
    for index in range(len(net.embedding)):
        embeddings = net.embed(h)
        embeddings[index] = embeddings[index] + 1.0
        changed = net(z, t, embeddings=embeddings)
        assert not torch.allclose(changed, reference), f"embedding {index} has no effect"


def test_exactly_one_of_h_or_embeddings():
    net = tiny_net()
    z, t, h = inputs(2, 16)
    with pytest.raises(ValueError, match="exactly one"):
        net(z, t)
    with pytest.raises(ValueError, match="exactly one"):
        net(z, t, h=h, embeddings=net.embed(h))
    with pytest.raises(ValueError, match="embeddings"):
        net(z, t, embeddings=net.embed(h)[:-1])


def test_embedding_module_swaps_between_networks():
    """Patching: loading another net's embedding module makes the conditioning path its."""
    first, second = tiny_net(seed=0), tiny_net(seed=1)
    z, t, h = inputs(2, 16)
    before = first(z, t, h=h)
    first.embedding.load_state_dict(second.embedding.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(first.embed(h), second.embed(h)))
    assert not torch.allclose(first(z, t, h=h), before)


def test_channels_last_matches_default_layout():
    net = tiny_net((8, 16, 32), 16, 1)
    z, t, h = inputs(2, 16)
    reference = net(z, t, h=h)
    net = net.to(memory_format=torch.channels_last)
    out = net(z.contiguous(memory_format=torch.channels_last), t, h=h)
    assert out.shape == reference.shape
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def test_set_precision_bf16_autocasts_forward_and_returns_float32():
    net = tiny_net((8, 16, 32), 16, 1)
    z, t, h = inputs(2, 16)
    reference = net(z, t, h=h)
    keys = list(net.state_dict())
    net.set_precision("bf16")
    out = net(z, t, h=h)
    assert out.dtype == torch.float32 and list(net.state_dict()) == keys
    assert not torch.equal(out, reference)  # it did run in bf16
    relative = ((out - z) - (reference - z)).norm() / (reference - z).norm()
    assert relative < 0.05, f"bf16 output differs from fp32 by {relative:.3f} (relative)"
    net.set_precision("fp32")
    assert torch.equal(net(z, t, h=h), reference)
    with pytest.raises(ValueError, match="precision"):
        net.set_precision("fp16")


def test_bf16_autocast_runs_and_stays_close_to_fp32():
    net = tiny_net((8, 16, 32), 16, 1).to(memory_format=torch.channels_last)
    z, t, h = inputs(2, 16)
    z = z.contiguous(memory_format=torch.channels_last)
    reference = net(z, t, h=h)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(z, t, h=h)
    assert out.shape == reference.shape and torch.isfinite(out).all()
    residual, expected = (out.float() - z), (reference - z)  # the network's own output
    relative = (residual - expected).norm() / expected.norm()
    assert relative < 0.05, f"bf16 output differs from fp32 by {relative:.3f} (relative)"


def test_sinusoidal_embedding_of_1000_t():
    t = torch.tensor([0.0, 0.5])
    embedding = sinusoidal_embedding(t)
    assert embedding.shape == (2, 64)
    assert torch.equal(embedding[0], torch.cat([torch.zeros(32), torch.ones(32)]))
    # the fastest frequency is 1: sin(1000 * 0.5)
    torch.testing.assert_close(embedding[1, 0], torch.sin(torch.tensor(500.0)))


def test_config_errors_name_the_fix():
    with pytest.raises(ConceptspaceError, match="image_size"):
        UNet(H_DIM, 10, channels=(8, 16, 32), **TINY)  # 10 -> 5 -> 2.5
    with pytest.raises(ConceptspaceError, match="groups"):
        UNet(H_DIM, 16, channels=(8, 12), **TINY | {"groups": 8})
    with pytest.raises(ConceptspaceError, match="attention_heads"):
        UNet(H_DIM, 16, channels=(8, 16), **TINY | {"attention_heads": 3})
    with pytest.raises(ConceptspaceError, match="time_dim"):
        UNet.from_config({k: v for k, v in PAPER_MODEL.items() if k != "time_dim"}, H_DIM, 32)


def test_intervention_projection_on_hand_made_vectors():
    """e' = e + alpha (e.u_c) u_c, e'' = e' - beta (e'.u_s) u_s, row by row."""
    e = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0], [5.0, -3.0, 2.0]])
    u_color = torch.tensor([1.0, 0.0, 0.0])
    u_size = torch.tensor([0.6, 0.8, 0.0])
    alpha = torch.tensor([2.0, 1.0, 0.0])
    beta = torch.tensor([0.5, 1.0, 0.0])
    # row 0: e.u_c = 1 -> e' = (3, 2, 0); e'.u_s = 3.4 -> e'' = (3, 2, 0) - 1.7 (0.6, 0.8, 0)
    # row 1: e.u_c = 0 -> e' = e; e'.u_s = 0.8 -> e'' = (0, 1, 1) - 0.8 (0.6, 0.8, 0)
    # row 2: alpha = beta = 0 -> unchanged
    expected = torch.tensor([[1.98, 0.64, 0.0], [-0.48, 0.36, 1.0], [5.0, -3.0, 2.0]])
    out = intervene(e, u_color, u_size, alpha, beta)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert torch.equal(out[2], e[2])


def test_embed_applies_the_intervention_in_every_block_with_its_own_directions():
    net = tiny_net((8, 16, 32), 16, 1)
    _, _, h = inputs(3, 16)
    color_h = torch.tensor([0.05, 0.05, 0.95, 0.0])
    size_h = torch.tensor([0.0, 0.0, 0.0, 0.6])
    alpha, beta = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.0, 0.1, 0.1])
    with torch.no_grad():
        plain = net.embed(h)
        intervened = net.embed(h, LinearIntervention(alpha, beta, color_h, size_h))
        assert len(intervened) == len(plain) == len(net.embedding)
        for block, (e, out) in enumerate(zip(plain, intervened)):
            mlp = net.embedding[block]
            u_color = F.normalize(mlp(color_h), dim=0)
            u_size = F.normalize(mlp(size_h), dim=0)
            e1 = e + alpha[:, None] * (e @ u_color)[:, None] * u_color
            e2 = e1 - beta[:, None] * (e1 @ u_size)[:, None] * u_size
            torch.testing.assert_close(out, e2, rtol=1e-5, atol=1e-6)
            assert torch.equal(out[0], e[0])  # alpha = beta = 0 row: bit-identical
            assert not torch.allclose(out[2], e[2])  # alpha = 2 moves the embedding


# ------------------------------------------------------------------- the init of h's layer


def test_h_init_fan_in_draws_h_layer_as_for_a_padded_h_and_leaves_the_rest():
    def built(fan_in):
        torch.manual_seed(0)
        return UNet(H_DIM, 16, channels=(8, 16), h_init_fan_in=fan_in, **TINY)

    default, padded = built(None), built(11)
    first_layers = {
        f"embedding.{i}.0.{kind}"
        for i in range(len(default.embedding))
        for kind in ("weight", "bias")
    }
    scaled = padded.state_dict()
    for name, value in default.state_dict().items():
        if name in first_layers:  # U(+-1/2) -> U(+-1/sqrt(11)): the same draws, scaled
            assert torch.allclose(scaled[name], value * (H_DIM / 11) ** 0.5)
            assert float(scaled[name].abs().max()) <= 11**-0.5
        else:
            assert torch.equal(scaled[name], value), name
    # the widest first layer's draws fill most of their range (not some other scale)
    widest = max((mlp[0].weight.detach() for mlp in padded.embedding), key=torch.numel)
    assert float(widest.abs().max()) > 0.9 * 11**-0.5


def test_h_init_fan_in_from_config_and_below_h_dim_refused():
    torch.manual_seed(0)
    net = UNet.from_config({**PAPER_MODEL, "h_init_fan_in": 11}, H_DIM, 32)
    assert float(net.embedding[0][0].weight.detach().abs().max()) <= 11**-0.5
    torch.manual_seed(0)
    net = UNet.from_config(PAPER_MODEL, H_DIM, 32)  # absent: PyTorch's default, U(+-1/2)
    assert float(net.embedding[0][0].weight.detach().abs().max()) > 11**-0.5
    with pytest.raises(ConceptspaceError, match="h_init_fan_in 3 is below"):
        UNet(H_DIM, 16, channels=(8, 16), h_init_fan_in=3, **TINY)
