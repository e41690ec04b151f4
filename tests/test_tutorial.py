"""docs/tutorial.ipynb runs top to bottom in a Jupyter kernel of its own, and prints the
numbers its text promises: the worked example to the printed digits, gradients within
the finite differences' error, the linear RNN's a**k."""
import re
import shutil

import pytest

from conftest import ROOT

NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed")
    work = tmp_path_factory.mktemp("tutorial")
    shutil.copy(NOTEBOOK, work)
    nb = nbformat.read(work / NOTEBOOK.name, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}}).execute()
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", out
            texts.append(out.get("text", "") + str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(texts), nb


def test_the_worked_example_to_the_printed_digits(printed):
    text, _ = printed
    assert "step 1: state [0.53704957 0.46211716], output 1.56128388" in text
    assert "step 2: state [0.85973818 0.88366641], output 2.72707101" in text
    assert "output 1.07793927" in text and "output 1.95330664" in text
    assert "step 1: state [0.74026877 0.7720626 ], output 1.71815207" in text
    assert "step 2: state [0.88656589 0.91491336], output 2.01848330" in text  # 2.0184833
    assert "out_pred (3, 1)" in text and "s_next   (5, 1)" in text


def test_the_backward_passes_agree_with_finite_differences(printed):
    text, _ = printed
    errors = re.findall(r"(one step|window of 6), (\w+): max relative error (\S+)", text)
    assert len(errors) == 7
    assert all(float(e) < 1e-6 for _, _, e in errors)


def test_training_sampling_and_the_gradient_picture(printed):
    text, nb = printed
    assert "<rnnlm.Model GRU 1 x 64" in text
    ratio, power = re.search(r"ratio at k = 10: (\S+)\s+0.9\*\*10 = (\S+)", text).groups()
    assert float(ratio) == pytest.approx(float(power), rel=1e-12)
    reach = dict(re.findall(r"^(\S+ .*?)\s+falls below 1e-3 of its start at k = (\S+)", text, re.M))
    assert len(reach) == 4
    assert nb.cells[-2].outputs[-1]["data"]["image/png"]  # the picture is drawn in the page
