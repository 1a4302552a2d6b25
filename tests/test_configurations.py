"""The math of ibtools.configurations (Balduzzi et al., *Neural Taylor Approximations*, section 3):
activation configurations against W x + b > 0 computed by hand (Definition 2), the three
exploration measures of Figure 5 against a hand-worked example and against brute-force loops,
packed storage, Observation 3, and the piecewise-linear pieces of Figure 1 against the kinks
-b_i / w_i of a one-hidden-layer network and the 2^L pieces of a composed tent map."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from ibtools import configurations as cf

F64 = torch.float64
property_test = settings(deadline=None, max_examples=40, derandomize=True)

small_tensors = hnp.arrays(np.bool_, hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6))
multi_round_tensors = hnp.arrays(np.bool_, st.tuples(st.integers(2, 6), st.integers(1, 6), st.integers(1, 6)))


# --- brute force, one loop per index of the definitions ----------------------------------------

def brute_min_hamming(A):
    N = A.shape[0]
    return np.array([min(int(np.sum(A[n] != A[k])) for k in range(n)) for n in range(1, N)], dtype=float)


def brute_switches(A):
    N, D, M = A.shape
    counts = np.zeros(D)
    for d in range(D):
        for n in range(1, N):
            for m in range(M):
                counts[d] += int(A[n, d, m]) != int(A[n - 1, d, m])
    return np.sort(counts / ((N - 1) * M))[::-1]


def brute_volume(A, k=50, floor=1e-12):
    N, D, M = A.shape
    least = floor * math.sqrt(N * D)
    volumes = []
    for m in range(M):
        X = A[:, :, m].astype(float)
        for d in range(D):
            X[:, d] -= X[:, d].mean()
        sigma = np.linalg.svd(X, compute_uv=False)[:min(k, N - 1, D)]
        volumes.append(sum(math.log(max(s, least)) for s in sigma))
    return np.sort(volumes)[::-1]


# --- a 3 x 2 x 2 example worked by hand ----------------------------------------------------------
# rounds n = 0, 1, 2 of a (D = 2 data points) x (M = 2 units) configuration
HAND = torch.tensor([[[0, 1], [1, 0]],
                     [[0, 1], [1, 1]],
                     [[1, 0], [0, 0]]], dtype=torch.bool)


def test_min_hamming_by_hand():
    # ||A1 - A0||^2 = 1; ||A2 - A0||^2 = 2 + 1 = 3, ||A2 - A1||^2 = 2 + 2 = 4, min 3
    assert cf.min_hamming_to_previous(HAND).tolist() == [1.0, 3.0]
    assert cf.min_hamming_to_previous(HAND, normalize=True).tolist() == [0.25, 0.75]
    assert cf.min_hamming_to_previous(HAND).dtype == F64
    assert cf.min_hamming_to_previous(HAND[:1]).shape == (0,)
    # a configuration seen before is not novel
    assert cf.min_hamming_to_previous(torch.cat([HAND, HAND[:1]]))[-1] == 0


def test_switches_by_hand():
    # point 0: [0,1] -> [0,1] -> [1,0]: 0 + 2 switches; point 1: [1,0] -> [1,1] -> [0,0]: 1 + 2,
    # out of (N - 1) M = 4 possible
    assert cf.switches_per_point(HAND, sort=False).tolist() == [0.5, 0.75]
    assert cf.switches_per_point(HAND).tolist() == [0.75, 0.5]
    assert cf.switches_per_point(HAND, epochs=4, sort=False).tolist() == [0.25, 0.375]


def test_log_singular_volume_by_hand():
    # unit 0: rows [0,1], [0,1], [1,0]; centred, u v^T with u = (1,1,-2)/3, v = (-1,1):
    #   sigma = |u||v| = 2/sqrt(3), then 0.
    # unit 1: rows [1,0], [1,1], [0,0]; centred X^T X = [[6,3],[3,6]]/9, eigenvalues 1, 1/3:
    #   sigma = 1, 1/sqrt(3).
    least = 1e-12 * math.sqrt(3 * 2)
    unit0_k1, unit1_k1 = math.log(2 / math.sqrt(3)), 0.0
    unit0_k2, unit1_k2 = unit0_k1 + math.log(least), math.log(1 / math.sqrt(3))
    torch.testing.assert_close(cf.log_singular_volume(HAND, k=1, sort=False),
                               torch.tensor([unit0_k1, unit1_k1], dtype=F64))
    torch.testing.assert_close(cf.log_singular_volume(HAND, k=2, sort=False),
                               torch.tensor([unit0_k2, unit1_k2], dtype=F64))
    torch.testing.assert_close(cf.log_singular_volume(HAND, k=2), torch.tensor([unit1_k2, unit0_k2], dtype=F64))
    # centring leaves rank <= N - 1 = 2 = D, so k = 50 means k = 2
    torch.testing.assert_close(cf.log_singular_volume(HAND, k=50), cf.log_singular_volume(HAND, k=2))


# --- the measures against brute force ------------------------------------------------------------

@property_test
@given(small_tensors)
def test_min_hamming_matches_brute_force(A):
    got = cf.min_hamming_to_previous(torch.from_numpy(A))
    np.testing.assert_array_equal(got.numpy(), brute_min_hamming(A))
    normalized = cf.min_hamming_to_previous(A, normalize=True)
    np.testing.assert_allclose(normalized.numpy(), brute_min_hamming(A) / (A.shape[1] * A.shape[2]))


@property_test
@given(multi_round_tensors)
def test_switches_match_brute_force(A):
    got = cf.switches_per_point(torch.from_numpy(A))
    np.testing.assert_allclose(got.numpy(), brute_switches(A), rtol=0, atol=1e-15)
    assert got.dtype == F64 and got.shape == (A.shape[1],)
    assert bool(((got >= 0) & (got <= 1)).all())


@property_test
@given(multi_round_tensors, st.integers(1, 7))
def test_log_singular_volume_matches_brute_force(A, k):
    got = cf.log_singular_volume(torch.from_numpy(A), k=k)
    np.testing.assert_allclose(got.numpy(), brute_volume(A, k=k), rtol=1e-9, atol=1e-9)


@property_test
@given(multi_round_tensors, st.integers(0, 2**31 - 1))
def test_log_singular_volume_invariances(A, seed):
    """The same column pattern at every round (mod 2), the order of rounds and data points
    that never change leave each unit's singular values, so its volume, as they are."""
    A = torch.from_numpy(A)
    N, D, M = A.shape
    gen = torch.Generator().manual_seed(seed)
    reference = cf.log_singular_volume(A, sort=False)
    pattern = torch.rand(D, M, generator=gen) < 0.5
    torch.testing.assert_close(cf.log_singular_volume(A ^ pattern, sort=False), reference)
    torch.testing.assert_close(cf.log_singular_volume(A[torch.randperm(N, generator=gen)], sort=False), reference)
    constant = (torch.rand(1, 3, M, generator=gen) < 0.5).expand(N, 3, M)
    wider = torch.cat([A, constant], dim=1)
    # the floor is floor * sqrt(N D) and k' = min(k, N - 1, D); keep both as they were with D points
    floor = 1e-12 * math.sqrt(D / (D + 3))
    torch.testing.assert_close(cf.log_singular_volume(wider, k=min(N - 1, D), floor=floor, sort=False), reference)


def test_unit_that_never_changes_gets_the_floor():
    gen = torch.Generator().manual_seed(0)
    A = torch.rand(6, 5, 4, generator=gen) < 0.5
    A[:, :, 2] = A[0, :, 2]  # unit 2 responds to every point the same way in every round
    volume = cf.log_singular_volume(A, k=50, sort=False)
    floor_value = min(50, 6 - 1, 5) * math.log(1e-12 * math.sqrt(6 * 5))
    assert volume[2].item() == pytest.approx(floor_value, rel=1e-12)
    assert volume[2] == volume.min() and bool((volume[[0, 1, 3]] > floor_value + 1).all())
    assert math.isfinite(floor_value)


def test_singular_spectrum_is_the_volume_without_its_floor():
    """r counts the singular values above the floor and s sums their logs, so the floored volume
    is s + (k' - r) log(floor sqrt(N D)); a unit that never changes has r = 0, s = 0, and the
    count does not move when the floor moves by orders of magnitude."""
    gen = torch.Generator().manual_seed(1)
    A = torch.rand(7, 9, 5, generator=gen) < 0.5
    A[:, :, 2] = A[0, :, 2]
    N, D, M = A.shape
    k = min(50, N - 1, D)
    r, s = cf.singular_spectrum(A)
    least = math.log(1e-12 * math.sqrt(N * D))
    torch.testing.assert_close(s + (k - r).double() * least, cf.log_singular_volume(A, sort=False))
    assert r[2] == 0 and s[2] == 0
    for m in range(M):  # brute force
        X = A[:, :, m].double().numpy()
        sigma = np.linalg.svd(X - X.mean(0), compute_uv=False)[:k]
        above = sigma[sigma > 1e-12 * math.sqrt(N * D)]
        assert int(r[m]) == len(above) and float(s[m]) == pytest.approx(np.log(above).sum(), abs=1e-9)
    assert torch.equal(cf.singular_spectrum(A, floor=1e-6)[0], r)


def test_the_floored_volume_is_dominated_by_its_floor():
    """A unit that moves in one direction of configuration space pays k' - 1 floors in the floored
    volume, each log(1e-12 sqrt(N D)) ~ -22.7 here, whatever the floor's arbitrary 1e-12; the span
    counts its one direction."""
    gen = torch.Generator().manual_seed(2)
    A = torch.zeros(21, 30, 2, dtype=torch.bool)
    A[:, :, 0] = torch.rand(21, 30, generator=gen) < 0.5  # spans all 20 directions
    A[1::2, :3, 1] = True  # switches on 3 points together: one direction
    r, _ = cf.singular_spectrum(A)
    assert r.tolist() == [20, 1]
    # the one-direction unit pays 19 floors of log(1e-12 sqrt(N D)) ~ -22.7 each
    v = cf.log_singular_volume(A, sort=False)
    assert v[1] < v[0] - 19 * 20


def test_mean_novelty_equals_mean_switches_when_the_nearest_earlier_epoch_is_the_previous():
    """Mean over epochs of min_k ||A_n - A_k||^2 / (D M) and the mean over points of the switches
    are the same sum when each epoch's nearest earlier configuration is the previous one (units
    that only ever switch on); with a return to an earlier configuration they differ."""
    N, D, M = 6, 4, 5
    gen = torch.Generator().manual_seed(3)
    order = torch.randperm(D * M, generator=gen)
    A = torch.zeros(N, D * M, dtype=torch.bool)
    for n in range(1, N):
        A[n] = A[n - 1]
        A[n, order[3 * (n - 1):3 * n]] = True
    A = A.reshape(N, D, M)
    novelty = (cf.min_hamming_to_previous(A) / (D * M)).mean()
    switches = cf.switches_per_point(A).mean()
    assert float(novelty) == pytest.approx(float(switches), rel=1e-12)
    back = torch.cat([A, A[:1]])  # the last epoch returns to the first configuration
    novelty = (cf.min_hamming_to_previous(back) / (D * M)).mean()
    assert float(novelty) < float(cf.switches_per_point(back).mean())


def test_measures_reject_bad_input():
    with pytest.raises(ValueError, match="A.bool"):
        cf.min_hamming_to_previous(HAND.int())
    with pytest.raises(ValueError, match="torch.stack"):
        cf.switches_per_point(HAND[0])
    with pytest.raises(ValueError, match="at least two"):
        cf.switches_per_point(HAND[:1])
    with pytest.raises(ValueError, match="k = 50"):
        cf.log_singular_volume(HAND, k=0)
    with pytest.raises(ValueError, match="N >= 2"):
        cf.log_singular_volume(HAND[:1])


@pytest.mark.parametrize("device", DEVICES)
def test_measures_on_device_and_in_blocks(device, monkeypatch):
    """Tiny blocks (one column, round or unit at a time) give the same numbers."""
    gen = torch.Generator().manual_seed(1)
    A = torch.rand(5, 7, 3, generator=gen) < 0.4
    expected = [cf.min_hamming_to_previous(A), cf.switches_per_point(A), cf.log_singular_volume(A)]
    monkeypatch.setattr(cf, "_BLOCK_ELEMENTS", 1)
    on_device = A.to(device)
    got = [cf.min_hamming_to_previous(on_device), cf.switches_per_point(on_device), cf.log_singular_volume(on_device)]
    for g, e in zip(got, expected):
        assert g.device.type == device
        torch.testing.assert_close(g.cpu(), e)


# --- packed storage --------------------------------------------------------------------------------

@property_test
@given(hnp.arrays(np.bool_, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=11)))
def test_pack_bits_round_trips_and_matches_numpy(bits):
    packed = cf.pack_bits(torch.from_numpy(bits))
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(bits.size / 8)
    np.testing.assert_array_equal(packed.numpy(), np.packbits(bits.ravel()))
    assert torch.equal(cf.unpack_bits(packed, bits.shape), torch.from_numpy(bits))


# --- activation configurations (Definition 2) -------------------------------------------------

def mlp(seed, dtype=F64, inplace=False):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=inplace), nn.Identity(), nn.Linear(4, 5),
                         nn.ReLU(inplace=inplace), nn.Linear(5, 2)).to(dtype)


def by_hand(model, x):
    """[W1 x + b1 > 0, W2 relu(W1 x + b1) + b2 > 0] with the weights read off the model."""
    (W1, b1), (W2, b2) = [(layer.weight, layer.bias) for layer in (model[0], model[3])]
    a1 = x @ W1.T + b1
    a2 = torch.clamp(a1, min=0) @ W2.T + b2
    return torch.cat([a1 > 0, a2 > 0], dim=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("inplace", [False, True])
def test_configuration_of_an_mlp_is_wx_plus_b_positive(device, dtype, inplace):
    model = mlp(0, dtype, inplace).to(device)
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)
    with torch.no_grad():
        expected = by_hand(model, x)
    assert 0 < expected.float().mean() < 1  # both states occur
    got = cf.activation_configuration(model, x)
    assert got.dtype == torch.bool and got.shape == (50, 9) and got.device.type == device
    assert torch.equal(got, expected)
    assert torch.equal(cf.activation_configuration(model, x, chunk_size=7), expected)
    assert torch.equal(cf.activation_configuration(model, x, layers=[1]), expected[:, 4:])
    # a float64 input to a float32 model (and vice versa) is cast to the model's dtype
    other = torch.float64 if dtype == torch.float32 else torch.float32
    assert cf.activation_configuration(model, x.to(other)).shape == (50, 9)


def test_configuration_leaves_the_model_as_it_was():
    model = mlp(0).train()
    model[3].eval()
    before = [p.detach().clone() for p in model.parameters()]
    cf.activation_configuration(model, torch.randn(8, 3, dtype=F64))
    assert [m.training for m in model.modules()] == [True, True, True, True, False, True, True]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def conv_net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 2, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(2 * 3 * 3, 4), nn.ReLU(), nn.Linear(4, 1)).to(F64)


def test_conv_units_are_channels_times_positions():
    model = conv_net(0)
    x = torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=F64)
    got = cf.activation_configuration(model, x, chunk_size=6)
    # 3 channels x 6 x 6 positions, 2 x 3 x 3, then 4 dense units
    assert got.shape == (20, 3 * 36 + 2 * 9 + 4)
    with torch.no_grad():
        first = model[0](x)
        second = model[3](F.max_pool2d(torch.relu(first), 2))
    assert torch.equal(got[:, :108], (first > 0).flatten(1))
    assert torch.equal(got[:, 108:126], (second > 0).flatten(1))


def test_layer_choice_errors_name_the_fix():
    model = mlp(0)
    x = torch.randn(4, 3, dtype=F64)
    with pytest.raises(ValueError, match="0 ... 1"):
        cf.activation_configuration(model, x, layers=[2])
    with pytest.raises(ValueError, match=r"nn.ReLU\(\) layers"):
        cf.activation_configuration(nn.Sequential(nn.Linear(3, 2)), x)
    shared = nn.ReLU()
    with pytest.raises(ValueError, match="its own nn.ReLU"):
        cf.activation_configuration(nn.Sequential(nn.Linear(3, 3), shared, nn.Linear(3, 3), shared), x.float())
    with pytest.raises(ValueError, match="max_units"):
        cf.activation_configuration(model, x, max_units=0)


def test_max_units_picks_a_fixed_random_subset_per_layer():
    model = conv_net(0)
    x = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=F64)
    full = cf.activation_configuration(model, x)
    recorder = cf.ConfigurationRecorder(model, x, max_units=10, seed=4)
    again = cf.ConfigurationRecorder(model, x, max_units=10, seed=4)
    other = cf.ConfigurationRecorder(model, x, max_units=10, seed=5)
    # 108 and 18 units are cut to 10; the 4 dense units are kept, all of them
    assert recorder.num_units == 24 and recorder.units[2] is None
    assert [(s.start, s.stop) for s in recorder.layer_slices] == [(0, 10), (10, 20), (20, 24)]
    assert all(torch.equal(a, b) for a, b in zip(recorder.units[:2], again.units[:2]))
    assert not torch.equal(recorder.units[0], other.units[0])
    assert all(bool((idx[1:] > idx[:-1]).all()) and idx.max() < size
               for idx, size in zip(recorder.units[:2], (108, 18)))  # sorted, distinct, in range
    first, second = recorder.record(), recorder.record()
    assert torch.equal(first, second) and torch.equal(first, again.record())
    # the recorded columns are the full configuration's columns at the chosen units
    expected = torch.cat([full[:, recorder.units[0]], full[:, 108 + recorder.units[1]], full[:, 126:]], dim=1)
    assert torch.equal(first, expected)
    # the function draws from a generator seeded 0 by default, so it repeats itself too
    assert torch.equal(cf.activation_configuration(model, x, max_units=10),
                       cf.activation_configuration(model, x, max_units=10))
    assert torch.equal(cf.activation_configuration(model, x, max_units=10, generator=torch.Generator().manual_seed(4)),
                       first)


def test_recorder_stores_every_round_packed():
    model = mlp(0)
    x = torch.randn(37, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    recorder = cf.ConfigurationRecorder(model, x, chunk_size=10)
    assert recorder.tensor().shape == (0, 37, 9) and recorder.nbytes == 0
    returned = []
    for _ in range(5):
        returned.append(recorder.record())
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.3 * torch.randn_like(p))
    stacked = torch.stack(returned)
    assert len(recorder) == 5 and torch.equal(recorder.tensor(), stacked)
    assert bool((stacked[1:] != stacked[:-1]).any())  # the configurations did change
    assert torch.equal(recorder.tensor(slice(1, 3)), stacked[1:3])
    assert torch.equal(recorder.tensor([4, 0]), stacked[[4, 0]])
    assert recorder.nbytes == 5 * math.ceil(37 * 9 / 8)
    assert recorder.nbytes < stacked.numel() / 8 + 5


# --- Observation 3 --------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_signed_gradient_maximises_l1_on_the_feasible_ball(seed):
    gen = torch.Generator().manual_seed(seed)
    p = 6
    g = torch.randn(p, generator=gen, dtype=F64)
    best = cf.signed_gradient_maximiser(g)
    assert best @ g >= 0 and best.abs().max() <= 1
    # interior points, points on faces and all 2^p vertices of the l_inf ball
    interior = 2 * torch.rand(4000, p, generator=gen, dtype=F64) - 1
    faces = interior.clone()
    faces[torch.arange(4000), torch.randint(0, p, (4000,), generator=gen)] = 1.0
    vertices = torch.tensor([[1.0 if (i >> j) & 1 else -1.0 for j in range(p)] for i in range(2**p)], dtype=F64)
    points = torch.cat([interior, faces, -faces, vertices])
    feasible = points[points @ g >= 0]
    assert len(feasible) > 2000
    assert bool((feasible.abs().sum(1) <= best.abs().sum() + 1e-12).all())
    assert bool((feasible @ g <= best @ g + 1e-12).all())  # and it decreases the loss fastest
    # a scaled-down gradient is feasible but not a maximiser
    assert (g / g.abs().max()).abs().sum() < best.abs().sum()


def test_signed_gradient_rejects_zero_coordinates():
    with pytest.raises(ValueError, match="set them to \\+1 or -1"):
        cf.signed_gradient_maximiser(torch.tensor([1.0, 0.0, -2.0]))
    with pytest.raises(ValueError, match="NaN"):
        cf.signed_gradient_maximiser(torch.tensor([1.0, float("nan")]))
    assert cf.signed_gradient_maximiser([3, -1]).tolist() == [1.0, -1.0]


# --- Figure 1 ---------------------------------------------------------------------------------------

def test_piecewise_linear_network_is_seeded_and_leaves_the_global_generator():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = cf.piecewise_linear_network([3, 4], seed=7), cf.piecewise_linear_network([3, 4], seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[0].weight, cf.piecewise_linear_network([3, 4], seed=8)[0].weight)
    assert [type(m) for m in a] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert a[-1].out_features == 1 and cf.piecewise_linear_network([2], input_dim=3)[0].in_features == 3
    with pytest.raises(ValueError, match="widths"):
        cf.piecewise_linear_network([])


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_function_and_gradient_of_one_hidden_layer(dtype):
    model = cf.piecewise_linear_network([5], seed=1, dtype=dtype)
    xs = torch.linspace(-3, 3, 101, dtype=F64)
    f, df = cf.function_and_gradient(model, xs)
    w, b = model[0].weight[:, 0].detach(), model[0].bias.detach()
    v, c = model[2].weight[0].detach(), model[2].bias.detach()
    x = xs.to(dtype)[:, None]
    torch.testing.assert_close(f, torch.relu(x * w + b) @ v + c)
    torch.testing.assert_close(df, ((x * w + b > 0).to(dtype) * w) @ v)
    assert f.dtype == dtype and not f.requires_grad and all(p.grad is None for p in model.parameters())


def test_gradient_matches_finite_differences_on_a_deep_net():
    model = cf.piecewise_linear_network([6, 6, 6], seed=2, dtype=F64)
    xs = torch.linspace(-2, 2, 41, dtype=F64) + 1e-3
    h = 1e-7
    f, df = cf.function_and_gradient(model, xs)
    plus, minus = cf.function_and_gradient(model, xs + h)[0], cf.function_and_gradient(model, xs - h)[0]
    central = (plus - minus) / (2 * h)
    # away from kinks (where the configuration at x +- h equals that at x) the slopes agree
    config = [cf.activation_configuration(model, (xs + s)[:, None]) for s in (-h, 0.0, h)]
    smooth = (config[0] == config[1]).all(1) & (config[2] == config[1]).all(1)
    assert smooth.sum() > 35
    torch.testing.assert_close(df[smooth], central[smooth], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("width,seed", [(1, 0), (3, 1), (8, 2), (8, 3), (20, 4)])
def test_one_hidden_layer_pieces_are_the_kinks_plus_one(width, seed):
    model = cf.piecewise_linear_network([width], seed=seed, dtype=F64)
    xs = torch.linspace(-3, 3, 6001, dtype=F64) + 1.234e-5  # no kink on a grid point
    kinks = -model[0].bias.detach() / model[0].weight[:, 0].detach()
    inside = kinks[(kinks > xs[0]) & (kinks < xs[-1])]
    # kinks between the same two grid points are one change of configuration
    expected = torch.unique(torch.searchsorted(xs, inside)).numel() + 1
    pieces = cf.count_linear_pieces(model, xs[torch.randperm(xs.numel())])  # the grid is sorted inside
    assert pieces == expected <= width + 1
    # the slope changes at each of those kinks (every output weight is non-zero here)
    _, df = cf.function_and_gradient(model, xs)
    assert int(((df[1:] - df[:-1]).abs() > 1e-12).sum()) + 1 == pieces


def tent_network(depth):
    """depth layers of the tent map t(x) = 2 relu(x) - 4 relu(x - 1/2) on [0, 1], width 2 each:
    t composed depth times has 2^depth linear pieces on [0, 1]."""
    model = cf.piecewise_linear_network([2] * depth, dtype=F64)
    with torch.no_grad():
        for k in range(depth + 1):
            layer = model[2 * k]
            if k > 0:  # the previous layer's output is t(x) = 2 h1 - 4 h2
                layer.weight.copy_(torch.tensor([[2.0, -4.0]] * (2 if k < depth else 1), dtype=F64))
            else:
                layer.weight.copy_(torch.tensor([[1.0], [1.0]], dtype=F64))
            layer.bias.copy_(torch.tensor([0.0, -0.5] if k < depth else [0.0], dtype=F64))
    return model


def test_deeper_nets_of_the_same_width_have_more_pieces():
    depth = 4
    model = tent_network(depth)
    xs = torch.linspace(0, 1, 4001, dtype=F64)[1:-1] + 1e-6  # avoid the dyadic kinks
    f, _ = cf.function_and_gradient(model, xs)
    tent = xs.clone()
    for _ in range(depth):
        tent = torch.where(tent < 0.5, 2 * tent, 2 - 2 * tent)
    torch.testing.assert_close(f, tent)  # it is the tent map composed depth times
    total_width = 2 * depth
    assert cf.count_linear_pieces(model, xs) == 2**depth > total_width + 1
    shallow = [cf.count_linear_pieces(cf.piecewise_linear_network([total_width], seed=s, dtype=F64), xs)
               for s in range(5)]
    assert max(shallow) <= total_width + 1
