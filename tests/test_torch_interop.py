"""rnnlm checkpoints load into PyTorch unchanged and compute the same thing."""
import numpy as np
import pytest

from rnnlm.io import checkpoint
from rnnlm import engines
from rnnlm.config import Config
from rnnlm.io.data import Vocab
from rnnlm.params import Spec, init_params, zero_state

torch = pytest.importorskip("torch")
nn = torch.nn


class TorchLM(nn.Module):
    def __init__(self, cell, vocab_size, hidden, layers):
        super().__init__()
        self.rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](vocab_size, hidden, layers)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, onehot, state):
        hs, _ = self.rnn(onehot, state)
        return self.out(hs)


@pytest.mark.parametrize("engine", ["fast", "textbook"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_checkpoint_loads_into_pytorch_and_matches(tmp_path, cell, layers, engine, kernel_path):
    V, H, B, T = 13, 24, 3, 17
    rng = np.random.default_rng(11)
    vocab = Vocab("".join(chr(97 + i) for i in range(V)))
    spec = Spec(cell, V, H, layers)
    params = init_params(spec, rng, np.float32)
    path = tmp_path / "m.npz"
    checkpoint.save(path, checkpoint.Checkpoint(params, spec, vocab, checkpoint.Meta(
        config=Config(cell=cell, hidden=H, layers=layers).__dict__)))
    # What a user writes: the arrays, straight into load_state_dict.
    arrays = np.load(path, allow_pickle=False)
    lm = TorchLM(cell, V, H, layers)
    lm.load_state_dict({k: torch.from_numpy(arrays[k]) for k in lm.state_dict()}, strict=True)

    x = rng.integers(0, V, (B, T))
    y = rng.integers(0, V, (B, T))
    state = [tuple(rng.normal(0, 0.5, (B, H)).astype(np.float32) for _ in s)
             for s in zero_state(spec, B)]
    loss, grads, _ = engines.get(engine).loss_and_grads(params, spec, x, y, state)
    logits, _ = engines.get(engine).forward(params, spec, x, state)

    onehot = torch.nn.functional.one_hot(torch.from_numpy(x.T.copy()), V).float()  # (T, B, V)
    h0 = torch.from_numpy(np.stack([s[0] for s in state]))
    t_state = (h0, torch.from_numpy(np.stack([s[1] for s in state]))) if cell == "lstm" else h0
    t_logits = lm(onehot, t_state)  # (T, B, V)
    t_loss = torch.nn.functional.cross_entropy(t_logits.reshape(-1, V),
                                               torch.from_numpy(y.T.reshape(-1).copy()))
    t_loss.backward()

    np.testing.assert_allclose(logits, t_logits.detach().numpy().transpose(1, 0, 2),
                               rtol=1e-5, atol=1e-5)
    assert loss == pytest.approx(t_loss.item(), rel=1e-5)
    for name, p in lm.named_parameters():
        ours, theirs = grads[name], p.grad.numpy()
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * scale, err_msg=name)
