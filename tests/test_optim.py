import math

import numpy as np
import pytest

from rnnlm.run import optim
from rnnlm.config import Config


def test_global_norm_clipping_scales_all_tensors_together():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    norm = optim.clip_gradients(grads, max_norm=1.0)
    assert norm == 5.0
    np.testing.assert_allclose(grads["a"], [0.6, 0.0])
    np.testing.assert_allclose(grads["b"], [[0.8]])
    assert optim.global_norm(grads) == pytest.approx(1.0)


def test_no_clipping_under_the_limit_and_elementwise_clipping():
    grads = {"a": np.array([3.0, -9.0])}
    assert optim.clip_gradients(grads, max_norm=100.0) == pytest.approx(math.sqrt(90))
    np.testing.assert_array_equal(grads["a"], [3.0, -9.0])
    optim.clip_gradients(grads, max_norm=0.0, max_value=5.0)
    np.testing.assert_array_equal(grads["a"], [3.0, -5.0])


def test_schedules():
    assert optim.learning_rate(Config(lr=0.1), 10 ** 6) == 0.1
    step = Config(lr=1.0, schedule="step", decay_rate=0.5, decay_every=10)
    assert [optim.learning_rate(step, s) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    cos = Config(lr=1.0, schedule="cosine", min_lr=0.1, max_steps=100)
    assert optim.learning_rate(cos, 0) == 1.0
    assert optim.learning_rate(cos, 50) == pytest.approx(0.55)
    assert optim.learning_rate(cos, 100) == pytest.approx(0.1)
    warm = Config(lr=1.0, warmup_steps=4)
    assert [optim.learning_rate(warm, s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_a_time_budget_schedule_reaches_its_floor_as_the_budget_ends():
    """Over wall-clock time, not steps: the final `reserve` seconds (the last evaluation)
    already run at the floor."""
    cos = Config(lr=1.0, schedule="cosine", min_lr=0.1, max_steps=0, max_seconds=100)
    assert optim.learning_rate(cos, 10 ** 6, elapsed=0.0) == 1.0
    assert optim.learning_rate(cos, 7, elapsed=50.0) == pytest.approx(0.55)
    assert optim.learning_rate(cos, 7, elapsed=45.0, reserve=10.0) == pytest.approx(0.55)
    assert optim.learning_rate(cos, 7, elapsed=90.0, reserve=10.0) == pytest.approx(0.1)
    lin = Config(lr=1.0, schedule="linear", min_lr=0.0, max_steps=0, max_seconds=100)
    assert optim.learning_rate(lin, 3, elapsed=25.0) == pytest.approx(0.75)
    assert optim.learning_rate(lin, 3, elapsed=500.0) == 0.0
    both = Config(lr=1.0, schedule="linear", min_lr=0.0, max_steps=100, max_seconds=100)
    assert optim.learning_rate(both, 80, elapsed=20.0) == pytest.approx(0.2)  # steps end first


@pytest.mark.parametrize("name", ["sgd", "adagrad", "rmsprop", "adam"])
def test_optimizers_match_pytorch(name):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    tparams = [torch.tensor(params["w"], requires_grad=True),
               torch.tensor(params["b"], requires_grad=True)]
    cfg = Config(optimizer=name, momentum=0.9, beta1=0.8, beta2=0.99, alpha=0.95, eps=1e-6)
    ours = optim.make_optimizer(cfg, params)
    lr = 0.05
    theirs = {
        "sgd": lambda: torch.optim.SGD(tparams, lr=lr, momentum=0.9),
        "adagrad": lambda: torch.optim.Adagrad(tparams, lr=lr, eps=1e-6),
        "rmsprop": lambda: torch.optim.RMSprop(tparams, lr=lr, alpha=0.95, eps=1e-6),
        "adam": lambda: torch.optim.Adam(tparams, lr=lr, betas=(0.8, 0.99), eps=1e-6),
    }[name]()
    for _ in range(5):
        grads = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
        ours.step(params, grads, lr)
        for t, key in zip(tparams, ("w", "b")):
            t.grad = torch.tensor(grads[key])
        theirs.step()
    np.testing.assert_allclose(params["w"], tparams[0].detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(params["b"], tparams[1].detach().numpy(), rtol=1e-10)
    assert int(ours.slots["t"]) == 5
