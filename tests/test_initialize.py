"""trainmedic.initialize: what each layer feeds (traced and by registration), the schemes, residual
branches zeroed, the scale through depth before and after, and the ReinitLayers remedy using it.
Every model is built in the test."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainmedic import initialize as I


def _mlp(depth: int, width: int, act: type, std: float, d_in: int = 32) -> nn.Sequential:
    layers, w = [], d_in
    for _ in range(depth - 1):
        layers += [nn.Linear(w, width), act()]
        w = width
    model = nn.Sequential(*layers, nn.Linear(w, 10))
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            nn.init.zeros_(m.bias)
    return model


def _steady(scale: I.Scale) -> bool:
    """Every layer's output std within 0.3x-3x of the first layer's."""
    return all(0.3 <= r <= 3 for r in scale.relative())


# -- what each layer feeds ----------------------------------------------------------------------------

class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn = nn.Linear(6, 8), nn.BatchNorm1d(8)
        self.b, self.c, self.d, self.e = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.conv = nn.Conv1d(1, 2, 3, padding=1)
        self.f, self.head = nn.Linear(16, 8), nn.Linear(8, 3)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        x = self.act(self.bn(self.a(x)))                                    # module, through a norm
        x = F.gelu(self.drop(self.b(x)))                                    # functional, through dropout
        x = torch.tanh(self.c(x).view(-1, 2, 4) + 1.0).flatten(1)           # through view + a constant add
        x = F.leaky_relu(self.d(x), 0.2)
        x = torch.sigmoid(self.e(x))
        x = self.conv(x.unsqueeze(1)).flatten(1).relu()                     # tensor method
        return self.head(F.selu(self.f(x)))                                 # head feeds nothing


def test_trace_follows_each_output_to_the_activation_it_feeds():
    found = I.find_activations(Mixed(), torch.randn(4, 6))
    assert {n: a[:2] for n, a in found.items()} == {
        "a": ("relu", None), "b": ("gelu", None), "c": ("tanh", None), "d": ("leaky_relu", 0.2),
        "e": ("sigmoid", None), "conv": ("relu", None), "f": ("selu", None), "head": ("linear", None)}
    assert all(by == "trace" for _, _, by in found.values())


def test_without_a_sample_registration_order_then_a_model_wide_guess():
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4), nn.Dropout(), nn.LeakyReLU(0.3),
                          nn.Linear(4, 4), nn.Linear(4, 4), nn.SELU(), nn.Linear(4, 2))
    found = I.find_activations(model)
    assert [found[str(i)][:2] for i in (0, 2, 5, 6, 8)] == [
        ("tanh", None), ("leaky_relu", 0.3), ("linear", None), ("selu", None), ("linear", None)]
    assert {by for _, _, by in found.values()} == {"registration"}
    guessed = I.find_activations(Mixed())                                  # only nn.ReLU registered, last
    assert guessed["a"][:2] == ("linear", None) and guessed["head"][:2] == ("relu", None)
    functional = I.find_activations(nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 2)}))
    assert functional == {"a": ("relu", None, "guess"), "b": ("relu", None, "guess")}


def test_tracing_leaves_the_rng_buffers_and_mode_as_they_were():
    model = Mixed().train()
    torch.manual_seed(3)
    running = model.bn.running_mean.clone(), model.bn.num_batches_tracked.clone()
    x = torch.randn(4, 6)
    state = torch.get_rng_state()
    I.activation_scale(model, x)
    I.find_activations(model, x)
    assert torch.equal(torch.get_rng_state(), state)                      # dropout drew, but was undone
    assert torch.equal(model.bn.running_mean, running[0]) and torch.equal(model.bn.num_batches_tracked, running[1])
    assert model.training and not model._forward_hooks and not model.a._forward_hooks
    I.reinit(model, x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)                      # draws came from the generator


# -- schemes ------------------------------------------------------------------------------------------

def test_each_scheme_draws_the_documented_std_and_zero_biases():
    model = nn.Sequential(nn.Linear(800, 400), nn.ReLU(), nn.Linear(400, 400), nn.LeakyReLU(0.5),
                          nn.Linear(400, 400), nn.Tanh(), nn.Linear(400, 400), nn.Sigmoid(),
                          nn.Linear(400, 400), nn.SELU(), nn.Linear(400, 200))
    result = I.reinit(model, generator=torch.Generator().manual_seed(0))
    assert [li.scheme for li in result.layers] == ["he", "he", "xavier", "xavier", "lecun", "lecun"]
    expected = [math.sqrt(2 / 800), math.sqrt(2 / 1.25) / 20, 5 / 3 * math.sqrt(2 / 800), math.sqrt(2 / 800),
                1 / 20, 1 / 20]
    for layer, std in zip([m for m in model if isinstance(m, nn.Linear)], expected):
        assert layer.weight.std().item() == pytest.approx(std, rel=0.03)
        assert not layer.bias.any()
    conv = nn.Conv2d(16, 32, 3)
    I.init_layer(conv, "he", "relu")
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (16 * 9)), rel=0.05)
    I.init_layer(conv, "orthogonal", "tanh")
    w = conv.weight.reshape(32, -1)
    assert torch.allclose(w @ w.T, (5 / 3) ** 2 * torch.eye(32), atol=1e-4)


def test_rnns_get_orthogonal_recurrent_blocks_and_a_forget_bias():
    lstm, gru = nn.LSTM(6, 8, num_layers=2), nn.GRU(6, 8)
    I.init_layer(lstm, "orthogonal")
    I.init_layer(gru, "orthogonal", generator=torch.Generator().manual_seed(1))
    for module, gates in ((lstm, 4), (gru, 3)):
        w = module.weight_hh_l0
        for k in range(gates):
            block = w[k * 8:(k + 1) * 8]
            assert torch.allclose(block @ block.T, torch.eye(8), atol=1e-5)
        assert not module.bias_hh_l0.any()
    assert torch.equal(lstm.bias_ih_l1, torch.tensor([0.] * 8 + [1.] * 8 + [0.] * 16))
    assert not gru.bias_ih_l0.any()
    assert lstm.weight_ih_l0.std().item() == pytest.approx(math.sqrt(2 / 14), rel=0.2)   # per gate: 6 in, 8 out


# -- the scale through depth --------------------------------------------------------------------------

@pytest.mark.parametrize("act, std, problem", [(nn.ReLU, 0.01, "vanishes"), (nn.ReLU, 1.0, "explodes"),
                                               (nn.Tanh, 0.01, "vanishes")])
def test_a_deep_mlp_keeps_its_scale_through_depth_after_reinit(act, std, problem):
    torch.manual_seed(0)
    model, x = _mlp(20, 256, act, std), torch.randn(256, 32)
    before = I.activation_scale(model, x)
    assert [s.name for s in before.layers] == [str(i) for i in range(0, 39, 2)]
    last = before.relative()[-1]
    assert (last < 1e-6) if problem == "vanishes" else (last > 1e6)
    assert not _steady(before)
    result = I.reinit(model, x)
    assert _steady(result.after), result.table()
    assert [s.std for s in result.before.layers] == [s.std for s in before.layers]
    assert torch.allclose(torch.tensor(result.after.relative()), torch.tensor(I.activation_scale(model, x).relative()))


def test_a_saturated_tanh_mlp_comes_out_of_its_flat_ends():
    torch.manual_seed(0)
    model, x = _mlp(20, 256, nn.Tanh, 1.0), torch.randn(256, 32)
    result = I.reinit(model, x)
    hidden = slice(0, 19)                                                  # the last layer feeds no tanh
    assert all(s.saturated > 0.6 for s in result.before.layers[hidden])
    assert all(s.saturated < 0.2 for s in result.after.layers[hidden])
    assert result.after.layers[-1].saturated is None
    assert _steady(result.after)
    assert all(li.scheme == "xavier" for li in result.layers[hidden]) and result.layers[-1].scheme == "lecun"


# -- residual branches --------------------------------------------------------------------------------

class ResBlock(nn.Module):
    def __init__(self, c_in: int, c: int):
        super().__init__()
        stride = 1 if c_in == c else 2
        self.conv1, self.bn1 = nn.Conv2d(c_in, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.down = None if stride == 1 else nn.Sequential(nn.Conv2d(c_in, c, 1, 2, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        out += x if self.down is None else self.down(x)
        return F.relu(out)


def test_resnet_blocks_start_as_identity_with_their_last_bn_zeroed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), ResBlock(8, 8), ResBlock(8, 16))
    x = torch.randn(4, 3, 8, 8)
    result = I.reinit(model, x)
    assert result.residual_ends == ["2.bn2", "3.bn2"]
    assert not model[2].bn2.weight.any() and not model[3].bn2.weight.any()
    assert model[2].bn1.weight.all() and model[3].down[1].weight.all()    # the downsample stays
    assert {li.name: li.activation for li in result.layers}["3.down.0"] == "relu"
    model.eval()
    h = model[1](model[0](x))
    with torch.no_grad():
        assert torch.equal(model[2](h), h)                                 # identity: relu(0 + relu(h))
    untouched = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), ResBlock(8, 8))
    assert I.reinit(untouched, x, zero_residual=False).residual_ends == [] and untouched[2].bn2.weight.all()
    # on its own, without re-initialising the rest (torchvision's zero_init_residual, found)
    alone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), ResBlock(8, 8), ResBlock(8, 16))
    conv = alone[0].weight.detach().clone()
    assert I.zero_residual_branches(alone, x) == ["2.bn2", "3.bn2"]
    assert not alone[2].bn2.weight.any() and not alone[3].bn2.weight.any() and torch.equal(alone[0].weight, conv)


class PreNorm(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        return x + self.mlp(self.ln(x))


class Cell(nn.Module):
    """A hand-written recurrent cell: ih(x_t) + hh(h) is not a residual add."""

    def __init__(self):
        super().__init__()
        self.ih, self.hh = nn.Linear(4, 8), nn.Linear(8, 8)

    def forward(self, x):
        h = torch.zeros(x.shape[0], 8)
        for t in range(x.shape[1]):
            h = torch.tanh(self.ih(x[:, t]) + self.hh(h))
        return h


def test_prenorm_blocks_zero_their_last_linear_and_recurrences_are_not_residual():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), PreNorm(16), PreNorm(16), nn.Linear(16, 2))
    x = torch.randn(3, 5, 6)
    result = I.reinit(model, x)
    assert result.residual_ends == ["1.mlp.2", "2.mlp.2"]
    assert not model[1].mlp[2].weight.any() and model[1].mlp[0].weight.any()
    with torch.no_grad():
        h = model[0](x)
        assert torch.equal(model[2](model[1](h)), h)
    cell = Cell()
    assert I.reinit(cell, torch.randn(2, 5, 4)).residual_ends == [] and cell.hh.weight.any()


# -- options ------------------------------------------------------------------------------------------

def test_overrides_frozen_and_lazy_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    model[2].requires_grad_(False)
    frozen, kept = model[2].weight.clone(), model[0].weight.clone()
    result = I.reinit(model, torch.randn(5, 4), overrides={"0": "keep", "4": "zero"})
    assert torch.equal(model[0].weight, kept) and torch.equal(model[2].weight, frozen)
    assert not model[4].weight.any()
    assert [li.skipped for li in result.layers] == ["kept", "frozen", None]
    I.reinit(model, include_frozen=True, overrides={"[24]": "orthogonal"})
    w = model[2].weight
    assert torch.allclose(w @ w.T, 2 * torch.eye(8), atol=1e-5)             # ReLU's gain, squared
    lazy = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    assert [li.skipped for li in I.reinit(lazy).layers] == ["lazy", None]


def test_same_seed_same_weights():
    def weights(**kw):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.LSTM(8, 8))
        torch.manual_seed(7)
        I.reinit(model, **kw)
        return [p.detach().clone() for p in model.parameters()]

    a, b = weights(), weights()
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    a, b = weights(generator=torch.Generator().manual_seed(5)), weights(generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(weights()[0], weights(generator=torch.Generator().manual_seed(5))[0])
    torch.manual_seed(1)
    built = [p.detach().clone() for p in nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.LSTM(8, 8)).parameters()]
    assert not torch.equal(a[0], built[0])                  # the weights were redrawn, not left as built


def test_bad_arguments_name_themselves():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(TypeError, match=r"model=.* is not a torch.nn.Module"):
        I.reinit("not a model")
    with pytest.raises(TypeError, match=r"sample='abc' is not a tensor, tuple or dict"):
        I.activation_scale(model, "abc")
    with pytest.raises(ValueError, match=r"sample=<tensor of shape \(2, 5\).*does not fit Sequential.*mat1 and mat2"
                       ) as err:
        I.reinit(model, torch.randn(2, 5))
    assert isinstance(err.value.__cause__, RuntimeError)
    with pytest.raises(ValueError, match=r"overrides\['0'\]='foo' is not a scheme; expected one of \['he'"):
        I.reinit(model, overrides={"0": "foo"})
    with pytest.raises(ValueError, match=r"overrides key 'head' matches no layer"):
        I.plan(model, overrides={"head": "zero"})
    with pytest.raises(ValueError, match=r"scheme='foo' is not a scheme"):
        I.init_layer(model[0], "foo")
    with pytest.raises(TypeError, match=r"generator=3 is not valid"):
        I.reinit(model, generator=3)


def test_the_report_reads_as_a_table_and_a_dict():
    torch.manual_seed(0)
    model, x = _mlp(6, 32, nn.ReLU, 0.01), torch.randn(64, 32)
    result = I.reinit(model, x)
    text = str(result)
    assert text.splitlines()[0].split()[:4] == ["layer", "type", "feeds", "scheme"]
    assert "relu [trace]" in text and "linear [trace]" in text and "last layer / first layer" in text
    assert len(text.splitlines()) == 1 + 6 + 1
    data = json.loads(json.dumps(result.to_dict()))
    assert [d["scheme"] for d in data["layers"]] == ["he"] * 5 + ["lecun"]
    assert len(data["before"]["layers"]) == len(data["after"]["layers"]) == 6
    assert "std/first" in str(I.activation_scale(model, x))
    assert I.reinit(model).before is None                                 # no sample, no scale


# -- the repair ---------------------------------------------------------------------------------------

def test_reinit_remedy_chooses_per_layer_and_undoes():
    from trainmedic.repair.model_remedies import ReinitLayers
    from trainmedic.repair.remedies import RepairContext
    model = nn.Sequential(nn.Linear(200, 200), nn.Tanh(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10))
    for m in model[::2]:
        nn.init.constant_(m.weight, 0.01)
        nn.init.zeros_(m.bias)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(3, 200)).sum().backward()
    opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    mon = type("M", (), {"models": [model]})()
    mon.table = type("T", (), {"optimizers": [opt]})()
    remedy = ReinitLayers()
    remedy.apply(RepairContext(monitor=mon, optimizer=opt))
    stds = [m.weight.std().item() for m in model[::2]]
    assert stds == pytest.approx([5 / 3 * math.sqrt(1 / 200), math.sqrt(2 / 200), math.sqrt(1 / 200)], rel=0.05)
    assert not opt.state
    remedy.undo(None)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
