import pytest
import torch

from reisoseg.network import PIChoice, ReIsoSegRMV6
from reisoseg.network.pi_module import SWAPS, draw_pi_choice, pseudo_isotropic, squeeze_z, swap_axes

PATTERNS = [(1, 1, 1), (1, 1, 2), (1, 2, 2), (2, 2, 2)]


@pytest.mark.parametrize("pattern, count", list(zip(PATTERNS, [1_713_811, 1_701_523, 1_694_611, 1_690_579])))
def test_parameter_counts_match_reference_without_dead_convs(pattern, count):
    net = ReIsoSegRMV6(1, 2, pattern)
    assert sum(p.numel() for p in net.parameters()) == count


@pytest.mark.parametrize("pattern", PATTERNS)
def test_six_outputs_with_spec_shapes(pattern):
    torch.manual_seed(0)
    net = ReIsoSegRMV6(1, 2, pattern)
    outputs = net(torch.randn(1, 1, 16, 64, 64))
    z_half = 8 if pattern[0] == 1 else 16
    expected = [(1, 2, 16, 64, 64), (1, 2, 16, 64, 64), (1, 2, z_half, 32, 32)] * 2
    assert [tuple(o.shape) for o in outputs] == expected


def test_pi_module_restores_encoder_shapes_for_every_choice():
    torch.manual_seed(0)
    net = ReIsoSegRMV6(1, 2, (1, 2, 2))
    _, x2, x3, x4, _ = net.encode(torch.randn(2, 1, 16, 64, 64))
    assert tuple(x2.shape) == (2, 36, 8, 32, 32) and tuple(x4.shape) == (2, 64, 8, 8, 8)
    for swap in range(4):
        for mode in "zxy":
            skips = net.pi_module(x2, x3, x4, choice=PIChoice(swap, mode))
            assert [s.shape for s in skips] == [x2.shape, x3.shape, x4.shape]


def _grad_norms(net, loss):
    net.zero_grad()
    loss.backward()
    pi = sum(p.grad.abs().sum().item() for p in net.pi_module.parameters() if p.grad is not None)
    encoder = sum(p.grad.abs().sum().item() for p in net.encoder.parameters() if p.grad is not None)
    heads = [(h.weight.grad.abs().sum().item() if h.weight.grad is not None else 0.0) for h in net.heads]
    return pi, encoder, heads


def test_gradient_routing_iso_reaches_pi_module_ani_does_not():
    torch.manual_seed(0)
    net = ReIsoSegRMV6(1, 2, (1, 2, 2))
    x = torch.randn(1, 1, 16, 64, 64)
    outputs = net(x, pi_choice=PIChoice(0, "z"))
    pi, encoder, heads = _grad_norms(net, sum(o.square().mean() for o in outputs[:3]))
    assert pi > 0 and encoder > 0 and all(h > 0 for h in heads[:3]) and heads[3:] == [0.0, 0.0, 0.0]
    outputs = net(x, pi_choice=PIChoice(0, "z"))
    pi, encoder, heads = _grad_norms(net, sum(o.square().mean() for o in outputs[3:]))
    assert pi == 0 and encoder > 0 and heads[:3] == [0.0, 0.0, 0.0] and all(h > 0 for h in heads[3:])


def test_inference_output_is_ds_ani_head_and_ignores_pi_randomness():
    torch.manual_seed(0)
    net = ReIsoSegRMV6(1, 2, (1, 1, 2)).eval()
    x = torch.randn(1, 1, 16, 64, 64)
    with torch.no_grad():
        ds_head3 = net(x, generator=torch.Generator().manual_seed(1))[3]
        net.deep_supervision = False
        torch.manual_seed(123)
        plain_a = net(x)
        torch.manual_seed(456)
        plain_b = net(x)
    assert torch.equal(plain_a, plain_b)
    torch.testing.assert_close(plain_a, ds_head3, rtol=0, atol=1e-5)


def test_plain_forward_never_calls_pi_module():
    net = ReIsoSegRMV6(1, 2, (2, 2, 2), deep_supervision=False)
    calls = []
    net.pi_module.register_forward_hook(lambda *args: calls.append(1))
    net(torch.randn(1, 1, 4, 32, 32))
    assert calls == []


def test_pi_randomness_follows_torch_seed():
    first = [draw_pi_choice(torch.Generator().manual_seed(7)) for _ in range(3)]
    second = [draw_pi_choice(torch.Generator().manual_seed(7)) for _ in range(3)]
    assert first == second
    generator = torch.Generator().manual_seed(0)
    draws = [draw_pi_choice(generator) for _ in range(4000)]
    modes = {m: sum(d.mode == m for d in draws) / len(draws) for m in "zxy"}
    swaps = [sum(d.swap == s for d in draws) / len(draws) for s in range(len(SWAPS))]
    assert abs(modes["z"] - 0.8) < 0.03 and abs(modes["x"] - 0.1) < 0.02 and abs(modes["y"] - 0.1) < 0.02
    assert all(abs(s - 0.25) < 0.03 for s in swaps)


def test_pseudo_isotropic_replicates_slices_and_degrades_one_axis():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 1, 2, 4, 4)
    up = pseudo_isotropic(x, 2, "z")
    assert up.shape == (1, 1, 4, 4, 4)
    assert torch.equal(up[0, 0, 0], up[0, 0, 1]) and torch.equal(up[0, 0, 1], x[0, 0, 0])
    blocky = pseudo_isotropic(x, 2, "y")  # 'y' degrades tensor dim 3
    assert torch.equal(blocky[..., 0, :], blocky[..., 1, :]) and not torch.equal(blocky[..., 0], blocky[..., 1])
    blocky_x = pseudo_isotropic(x, 2, "x")  # 'x' degrades dim 4
    assert torch.equal(blocky_x[..., 0], blocky_x[..., 1])
    assert torch.equal(squeeze_z(up, 2), x)
    z8 = torch.arange(8, dtype=torch.float32).reshape(1, 1, 8, 1, 1)
    assert squeeze_z(z8, 4).flatten().tolist() == [0.0, 4.0]


def test_fft_depthwise_and_channels_last_pointwise_equal_grouped_convs():
    import torch.nn.functional as F

    from reisoseg.network.blocks import UXUnit, depthwise_correlation_fft

    torch.manual_seed(0)
    unit = UXUnit(6)
    with torch.no_grad():
        unit.layer_scale.fill_(0.5)
        unit.expand.bias.uniform_(-0.5, 0.5)
        unit.project.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 6, 9, 10, 7)
    grouped = F.conv3d(x, unit.depthwise.weight, unit.depthwise.bias, padding=3, groups=6)
    torch.testing.assert_close(depthwise_correlation_fft(x, unit.depthwise.weight, unit.depthwise.bias), grouped,
                               rtol=0, atol=1e-5)
    y = unit.norm(grouped.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
    y = F.conv3d(F.gelu(F.conv3d(y, unit.expand.weight, unit.expand.bias, groups=6)), unit.project.weight,
                 unit.project.bias, groups=6)
    torch.testing.assert_close(unit(x), x + 0.5 * y, rtol=0, atol=1e-5)


def test_swaps_are_involutions():
    x = torch.randn(1, 2, 3, 4, 5)
    for swap in range(4):
        assert torch.equal(swap_axes(swap_axes(x, swap), swap), x)
    assert swap_axes(x, 0).shape == (1, 2, 5, 4, 3)


def test_shape_check_raises_before_forward():
    net = ReIsoSegRMV6(1, 2, (1, 1, 1))
    with pytest.raises(ValueError, match="not divisible"):
        net(torch.zeros(1, 1, 8, 64, 64))


def test_state_dict_loads_strictly_in_both_modes():
    a = ReIsoSegRMV6(1, 3, (1, 2, 2), deep_supervision=True)
    b = ReIsoSegRMV6(1, 3, (1, 2, 2), deep_supervision=False)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(1, 1, 8, 32, 32)
    a.eval(), b.eval()
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x)[3])  # the plain branch is deep supervision's first ani head
