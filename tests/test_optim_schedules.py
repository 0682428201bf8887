"""AdamW, gradient clipping and learning-rate schedules against PyTorch's own implementations.

Each test runs cnnspec's optimizer and torch's on the same parameters (float64) with the same
gradients for several steps, stepping the schedules alike, and compares the parameters, the
learning rates (and the momentum a one-cycle schedule cycles) after every step.
"""
import numpy as np
import pytest

import cnnspec
from cnnspec.engine import (SGD, Adam, AdamW, CosineAnnealingLR, LinearLR, MultiStepLR, OneCycleLR,
                            SequentialLR, StepLR, clip_grad_norm_)

torch = pytest.importorskip("torch")

NET = """
network Small {
    input x: 6
    dense(5) -> relu
    dense(4) -> relu
    dense(3)
}
"""
RTOL = 1e-9                 # float64 on both sides: agreement to rounding (the brief asks 1e-6)


@pytest.fixture(scope="module")
def network():
    return cnnspec.loads(NET)


def pair(network, seed=0, dtype="float64"):
    """A model and torch tensors holding the same parameters (one tensor per layer parameter)."""
    model = network.compile(dtype=dtype, seed=seed)
    tensors = {(layer, key): torch.tensor(value.copy(), requires_grad=True)
               for layer, group in model.params.items() for key, value in group.items()}
    return model, tensors


def set_gradients(model, tensors, step, scale=1.0):
    """The same random gradients on both sides (a different draw per step)."""
    rng = np.random.default_rng(100 + step)
    for (layer, key), t in tensors.items():
        g = scale * rng.standard_normal(t.shape)
        model._grads[layer][key][...] = g
        t.grad = torch.tensor(g, dtype=t.dtype)


def assert_same_params(model, tensors, rtol=RTOL, atol=1e-14):
    for (layer, key), t in tensors.items():
        np.testing.assert_allclose(model.params[layer][key], t.detach().numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"{layer}.{key}")


@pytest.mark.parametrize("kwargs", [{}, {"lr": 3e-2, "betas": (0.8, 0.99), "weight_decay": 0.1}])
def test_adamw_matches_torch(network, kwargs):
    model, tensors = pair(network)
    opt = AdamW(model, **kwargs)
    topt = torch.optim.AdamW(list(tensors.values()), **kwargs)
    assert opt.weight_decay == topt.defaults["weight_decay"] == kwargs.get("weight_decay", 0.01)
    for step in range(6):
        set_gradients(model, tensors, step)
        opt.step()
        topt.step()
        assert_same_params(model, tensors)
    # decoupled: not the same as Adam with an L2 term
    adam, _ = pair(network)
    l2 = Adam(adam, **{**kwargs, "weight_decay": opt.weight_decay})
    for step in range(6):
        set_gradients(adam, tensors, step)
        l2.step()
    assert not np.allclose(adam.params["dense1"]["weight"], model.params["dense1"]["weight"], rtol=1e-6)


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.0, 1e-3), (0.9, 1e-3)])
def test_sgd_in_float32_equals_torch_bit_for_bit(momentum, weight_decay):
    """The weight decay and the parameter's move are each one fused multiply-add, as torch's
    ``grad.add(param, alpha=wd)`` and ``param.add_(buf, alpha=-lr)``: float32 parameters equal
    torch's bit for bit, step after step (LeNet-5's layers: the vectorised loops and their tails);
    and equal a NumPy reference that rounds each fused product once (computed in float64, where
    the float32 products are exact)."""
    from cnnspec.engine import bench

    model = cnnspec.loads(bench.LENET5).compile(dtype="float32", seed=0)
    tensors = {(layer, key): torch.tensor(value.copy(), requires_grad=True)
               for layer, group in model.params.items() for key, value in group.items()}
    opt = SGD(model, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    topt = torch.optim.SGD(list(tensors.values()), lr=0.1, momentum=momentum, weight_decay=weight_decay)
    lr, m, wd = (np.float64(np.float32(v)) for v in (0.1, momentum, weight_decay))
    params = {key: model.params[key[0]][key[1]].astype(np.float64) for key in tensors}
    bufs = {key: np.zeros_like(p) for key, p in params.items()}
    for step in range(4):
        rng = np.random.default_rng(step)
        for (layer, key), t in tensors.items():
            g = rng.standard_normal(t.shape).astype(np.float32)
            model._grads[layer][key][...] = g
            t.grad = torch.from_numpy(g.copy())
            d = np.float32(wd * params[layer, key] + g)                   # fma, then rounded
            if momentum:
                d = np.float32(np.float32(bufs[layer, key] * m) + d)      # mul_, add_: 2 roundings
                bufs[layer, key] = d.astype(np.float64)
            params[layer, key] = np.float32(params[layer, key] - lr * d).astype(np.float64)
        opt.step()
        topt.step()
        for (layer, key), t in tensors.items():
            ours = model.params[layer][key]
            np.testing.assert_array_equal(ours, t.detach().numpy(), err_msg=f"{layer}.{key} step {step}")
            np.testing.assert_array_equal(ours, params[layer, key].astype(np.float32))


def test_adamw_in_float32_matches_torch(network):
    model, _ = pair(network, dtype="float32")
    tensors = {(layer, key): torch.tensor(value.copy(), requires_grad=True)
               for layer, group in model.params.items() for key, value in group.items()}
    opt, topt = AdamW(model, lr=1e-2), torch.optim.AdamW(list(tensors.values()), lr=1e-2)
    for step in range(4):
        set_gradients(model, tensors, step)
        opt.step()
        topt.step()
    assert_same_params(model, tensors, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 100.0])
def test_clip_grad_norm_matches_torch(network, max_norm):
    """Total L2 norm over all trainable parameters, scaled by max_norm/(norm + 1e-6) when above:
    norms about 5 here, so 0.5 and 3 clip every step and 100 never does."""
    model, tensors = pair(network)
    model.set_trainable("dense2", False)                 # a frozen layer takes no part
    del tensors["dense2", "weight"], tensors["dense2", "bias"]
    opt = SGD(model, lr=0.1, momentum=0.9, clip_grad_norm=max_norm)
    topt = torch.optim.SGD(list(tensors.values()), lr=0.1, momentum=0.9)
    frozen = model.params["dense2"]["weight"].copy()
    for step in range(4):
        set_gradients(model, tensors, step)
        model._grads["dense2"]["weight"][...] = 1e3          # stale gradient of the frozen layer
        opt.step()
        total = torch.nn.utils.clip_grad_norm_(list(tensors.values()), max_norm)
        topt.step()
        assert opt.grad_norm == pytest.approx(total.item(), rel=RTOL)
        assert_same_params(model, tensors)
    assert np.array_equal(model.params["dense2"]["weight"], frozen)


def test_clip_grad_norm_function_on_its_own(network):
    model, tensors = pair(network)
    set_gradients(model, tensors, 0, scale=10.0)
    total = clip_grad_norm_(model, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(list(tensors.values()), 1.0)
    assert total == pytest.approx(expected.item(), rel=RTOL)
    for (layer, key), t in tensors.items():
        np.testing.assert_allclose(model._grads[layer][key], t.grad.numpy(), rtol=RTOL)
    flat = np.concatenate([g.reshape(-1) for group in model._grads.values() for g in group.values()])
    assert np.linalg.norm(flat) == pytest.approx(1.0, rel=1e-5)


# -- schedules ----------------------------------------------------------------------------------

def warmup_then(opt, make_main, module, warmup=3, factor=0.1):
    first = module.LinearLR(opt, start_factor=factor, total_iters=warmup)
    return module.SequentialLR(opt, [first, make_main(opt)], milestones=[warmup])


class Ours:
    StepLR, MultiStepLR, CosineAnnealingLR, LinearLR = StepLR, MultiStepLR, CosineAnnealingLR, LinearLR
    OneCycleLR, SequentialLR = OneCycleLR, SequentialLR


SCHEDULES = {
    "step": lambda opt, m: m.StepLR(opt, step_size=3, gamma=0.5),
    "multistep": lambda opt, m: m.MultiStepLR(opt, milestones=[2, 5, 9], gamma=0.3),
    "cosine": lambda opt, m: m.CosineAnnealingLR(opt, T_max=7, eta_min=1e-3),   # 14 steps: beyond T_max
    "linear": lambda opt, m: m.LinearLR(opt, start_factor=0.25, total_iters=5),
    "warmup+cosine": lambda opt, m: warmup_then(opt, lambda o: m.CosineAnnealingLR(o, T_max=11), m),
    "warmup+step": lambda opt, m: warmup_then(opt, lambda o: m.StepLR(o, step_size=4, gamma=0.5), m),
    "onecycle": lambda opt, m: m.OneCycleLR(opt, max_lr=0.2, total_steps=14),
    "onecycle-3phase-linear": lambda opt, m: m.OneCycleLR(opt, max_lr=0.2, total_steps=14, pct_start=0.25,
                                                          anneal_strategy="linear", three_phase=True),
    "onecycle-no-momentum": lambda opt, m: m.OneCycleLR(opt, max_lr=0.2, epochs=2, steps_per_epoch=7,
                                                        cycle_momentum=False, div_factor=10,
                                                        final_div_factor=100),
}
STEPS = 14


def momentum_of(topt):
    group = topt.param_groups[0]
    return group["betas"][0] if "betas" in group else group["momentum"]


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_match_torch(network, name, optimizer):
    model, tensors = pair(network)
    params = list(tensors.values())
    if optimizer == "sgd":
        opt, topt = SGD(model, lr=0.1, momentum=0.9), torch.optim.SGD(params, lr=0.1, momentum=0.9)
    elif optimizer == "adam":
        opt, topt = Adam(model, lr=0.05), torch.optim.Adam(params, lr=0.05)
    else:
        opt, topt = AdamW(model, lr=0.05), torch.optim.AdamW(params, lr=0.05)
    sched, tsched = SCHEDULES[name](opt, Ours), SCHEDULES[name](topt, torch.optim.lr_scheduler)
    lrs, _ = train_both(model, tensors, opt, topt, sched, tsched, STEPS)
    assert len(set(np.round(lrs, 12))) > 2, "the schedule did change the learning rate"


def train_both(model, tensors, opt, topt, sched, tsched, steps):
    """Step both sides alike, comparing lr, momentum and parameters at every step; returns the
    learning rates and momenta seen."""
    lrs, momenta = [], []
    for step in range(steps):
        assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=RTOL), f"lr at step {step}"
        assert opt.momentum_value == pytest.approx(momentum_of(topt), rel=RTOL), f"momentum at step {step}"
        lrs.append(opt.lr)
        momenta.append(opt.momentum_value)
        set_gradients(model, tensors, step)
        opt.step()
        topt.step()
        assert_same_params(model, tensors)
        sched.step()
        tsched.step()
    return lrs, momenta


def test_onecycle_momentum_cycles_sgd_without_momentum(network):
    """torch's OneCycleLR cycles momentum by default, even for SGD(momentum=0): 0.95 -> 0.85 -> 0.95."""
    model, tensors = pair(network)
    opt, topt = SGD(model, lr=0.1), torch.optim.SGD(list(tensors.values()), lr=0.1)
    sched = OneCycleLR(opt, max_lr=0.3, total_steps=10)
    tsched = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=0.3, total_steps=10)
    _, seen = train_both(model, tensors, opt, topt, sched, tsched, 10)
    assert seen[0] == 0.95 and min(seen) == pytest.approx(0.85)


def test_scheduler_state_round_trip(network):
    model, _ = pair(network)
    opt = SGD(model, lr=0.1, momentum=0.9)
    sched = OneCycleLR(opt, max_lr=0.2, total_steps=20)
    for _ in range(7):
        sched.step()
    lr, momentum, state = opt.lr, opt.momentum, sched.state_dict()
    fresh, _ = pair(network)
    opt2 = SGD(fresh, lr=0.1, momentum=0.9)
    sched2 = OneCycleLR(opt2, max_lr=0.2, total_steps=20)
    sched2.load_state_dict(state)
    assert (opt2.lr, opt2.momentum, sched2.last_epoch) == (lr, momentum, 7)
