import pytest
import torch

from fgsd import network
from fgsd.network import TAPS, UNet


def test_parameter_counts_match_the_authors_small_models():
    # METHOD.md §3.2: the ovals mixture model has 627,921 parameters; the conditional one 352 more.
    assert network.n_params(UNet(channels=1, widths=(16, 32, 64, 128))) == 627_921
    assert network.n_params(UNet(channels=1, widths=(16, 32, 64, 128), conditional=True)) == 628_273


@pytest.mark.parametrize("size,channels", [(32, 1), (16, 3), (80, 1)])
def test_output_and_feature_shapes(size, channels):
    torch.manual_seed(0)
    net = UNet(channels=channels, widths=(8, 16, 16, 32))
    x = torch.rand(3, channels, size, size)
    assert net(x).shape == x.shape
    means = net.block_means(x)
    assert list(means) == list(network.BLOCKS)
    assert net.phi(x).shape == (3, sum(net.widths[b] for b in TAPS))
    slices = network.layer_slices(net.widths)
    assert slices["mid"] == slice(8 + 16 + 16, 8 + 16 + 16 + 32)


def _conditional(match=("mid",), matching="replace"):
    torch.manual_seed(0)
    net = UNet(widths=(8, 16, 16, 32), conditional=True, match=match, matching=matching)
    with torch.no_grad():
        for w in net.match_weight.values():
            w.uniform_(0.5, 1.5)
    return net


def _matched_means(net, x, cond):
    """The channel means every block hands on when `net` denoises x conditioned on cond, and the
    means the same blocks would have had unmatched (same forward pass up to that block)."""
    seen, own = {}, {}
    original = net._block

    def spy(name, h, c, record):
        own[name] = h.mean(dim=(2, 3))
        out = original(name, h, c, record)
        seen[name] = out.mean(dim=(2, 3))
        return out

    net._block = spy
    net(x, cond)
    return seen, own


@pytest.mark.parametrize("block", ["enc2", "mid", "dec3"])
def test_matching_sets_the_block_means_to_w_phi(block):
    net = _conditional(match=(block,))
    x, cond = torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)
    phi_y = net.condition(cond)
    seen, _ = _matched_means(net, x, phi_y)
    torch.testing.assert_close(seen[block], net.match_weight[block] * phi_y[block], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block", ["enc2", "mid", "dec3"])
def test_shift_matching_moves_the_block_means_by_w_towards_phi(block):
    net = _conditional(match=(block,), matching="shift")
    x, cond = torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)
    phi_y = net.condition(cond)
    seen, own = _matched_means(net, x, phi_y)
    w = net.match_weight[block]
    torch.testing.assert_close(seen[block], own[block] + w * (phi_y[block] - own[block]), rtol=1e-5, atol=1e-6)


def test_shift_matching_is_replacement_at_unit_weights_and_no_matching_at_zero():
    torch.manual_seed(3)
    match = ("mid", "dec3", "dec2")
    replace = UNet(widths=(8, 16, 16, 32), conditional=True, match=match)
    shift = UNet(widths=(8, 16, 16, 32), conditional=True, match=match, matching="shift")
    shift.load_state_dict(replace.state_dict())
    x, cond = torch.rand(3, 1, 16, 16), torch.rand(3, 1, 16, 16)
    torch.testing.assert_close(shift(x, cond), replace(x, cond), rtol=1e-5, atol=1e-6)
    plain = UNet(widths=(8, 16, 16, 32))
    plain.load_state_dict({k: v for k, v in shift.state_dict().items() if not k.startswith("match_weight")})
    with torch.no_grad():
        for w in shift.match_weight.values():
            w.zero_()
    torch.testing.assert_close(shift(x, cond), plain(x), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(replace(x, cond), plain(x), atol=1e-4)


@pytest.mark.parametrize("match", [("mid",), ("enc1", "mid", "dec2")])
def test_conditioning_an_image_on_itself_with_unit_weights_changes_nothing(match):
    torch.manual_seed(1)
    net = UNet(widths=(8, 16, 16, 32), conditional=True, match=match)
    plain = UNet(widths=(8, 16, 16, 32))
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("match_weight")})
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(net(x, x), plain(x), rtol=1e-5, atol=1e-6)


def test_three_ways_to_condition_agree():
    net = _conditional()
    x, exemplars = torch.rand(3, 1, 16, 16), torch.rand(5, 1, 16, 16)
    centroid = net.condition(exemplars, average=True)
    tiled = {b: v.expand(3, -1) for b, v in centroid.items()}
    out_centroid = net(x, centroid)
    torch.testing.assert_close(out_centroid, net(x, tiled))
    mean_mid = net.block_means(exemplars)["mid"].mean(0, keepdim=True)
    torch.testing.assert_close(centroid["mid"], mean_mid)
    # one exemplar per sample, and one exemplar broadcast to the batch
    torch.testing.assert_close(net(x, exemplars[:1].expand(3, -1, -1, -1)), net(x, exemplars[:1]))
    assert not torch.allclose(net(x, exemplars[:3]), out_centroid)


@pytest.mark.parametrize("matching", ["replace", "shift"])
def test_shared_exemplars_condition_as_one_exemplar_per_image(matching):
    """rows: the exemplars run through the conditioner stream once and are indexed per image (the
    per_class conditioner), with the outputs and gradients of one exemplar per image."""
    net = _conditional(match=("mid", "dec3", "dec2"), matching=matching)
    x, exemplars = torch.rand(5, 1, 16, 16), torch.rand(2, 1, 16, 16)
    rows = torch.tensor([1, 0, 1, 1, 0])
    results = []
    for run in (lambda: net(x, exemplars, rows), lambda: net(x, exemplars[rows])):
        net.zero_grad()
        out = run()
        out.square().sum().backward()
        results.append((out.detach(), [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in net.parameters()]))
    (shared, g_shared), (each, g_each) = results
    torch.testing.assert_close(shared, each)
    for a, b in zip(g_shared, g_each):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)  # the same sums in another order
    assert not torch.allclose(shared, net(x, exemplars, 1 - rows))


def test_gradients_flow_through_the_conditioner_stream():
    net = _conditional()
    x, cond = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16, requires_grad=True)
    net(x, cond).sum().backward()
    assert cond.grad is not None and cond.grad.abs().sum() > 0
    assert net.match_weight["mid"].grad.abs().sum() > 0


def test_misuse_is_refused():
    with pytest.raises(ValueError, match="unconditional model"):
        UNet(widths=(8, 16, 16, 32))(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="needs a conditioner"):
        _conditional()(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="unknown blocks"):
        UNet(conditional=True, match=("middle",))
    with pytest.raises(ValueError, match="unknown matching 'additive'"):
        UNet(conditional=True, matching="additive")


def test_psnr_of_known_error():
    clean = torch.zeros(2, 1, 4, 4)
    assert torch.allclose(network.psnr(clean + 0.1, clean), torch.tensor([20.0, 20.0]))


def test_gated_output_blends_the_input_and_the_clean_estimate():
    """x^ = g y + (1 - g) a: a gate fully open returns the input, a closed one the estimate."""
    net = UNet(widths=(8, 16, 16, 32), output="gated")
    y = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        net.final.weight.zero_()
        net.final.bias.copy_(torch.tensor([0.3, 20.0]))   # a = 0.3 everywhere, gate open
        torch.testing.assert_close(net(y), y, atol=1e-6, rtol=0)
        net.final.bias.copy_(torch.tensor([0.3, -20.0]))  # gate closed
        torch.testing.assert_close(net(y), torch.full_like(y, 0.3), atol=1e-6, rtol=0)
        net.final.bias.copy_(torch.tensor([0.3, 0.0]))    # half open
        torch.testing.assert_close(net(y), 0.5 * y + 0.15)
    with pytest.raises(ValueError, match="unknown output"):
        UNet(output="noise")


def test_gated_mean_output_starts_its_estimate_at_the_noisy_crops_mean():
    """gated_mean: a is relative to each crop's (per-channel) mean, so a zero estimate behind a
    closed gate is the trivial denoiser, and an open gate still returns the input."""
    from fgsd import references
    net = UNet(widths=(8, 16, 16, 32), channels=3, output="gated_mean")
    y = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        net.final.weight.zero_()
        net.final.bias.copy_(torch.tensor([0.0, 0.0, 0.0, -20.0, -20.0, -20.0]))  # a = 0, gate closed
        torch.testing.assert_close(net(y), y.mean(dim=(2, 3), keepdim=True).expand_as(y), atol=1e-6, rtol=0)
        grey = y[:, :1]
        one = UNet(widths=(8, 16, 16, 32), output="gated_mean")
        one.final.weight.zero_()
        one.final.bias.copy_(torch.tensor([0.0, -20.0]))
        torch.testing.assert_close(one(grey), references.trivial()(grey, None, None), atol=1e-6, rtol=0)
        net.final.bias.copy_(torch.tensor([0.1, 0.1, 0.1, 20.0, 20.0, 20.0]))  # gate open
        torch.testing.assert_close(net(y), y, atol=1e-6, rtol=0)
