import numpy as np
import pytest

import fastmf


def test_public_namespace_is_pinned():
    assert sorted(fastmf.__all__) == fastmf.__all__
    assert fastmf.__all__ == [
        "BinaryMF",
        "ConvergenceWarning",
        "Dataset",
        "DivergenceError",
        "IdMap",
        "ImplicitMF",
        "MatrixFactorization",
        "ModelFileError",
        "NotFittedError",
        "RealValueMF",
        "SerialFallbackWarning",
        "__version__",
        "cosine_similarity",
        "datasets",
        "exceptions",
        "ids",
        "io",
        "load",
        "metrics",
        "mf",
        "model_selection",
        "show_config",
        "warmup",
    ]
    for name in fastmf.__all__:
        assert hasattr(fastmf, name)


def test_package_never_imports_sklearn():
    import subprocess
    import sys

    code = "import sys, fastmf; fastmf.RealValueMF(k=2, n_epochs=1, tol=None).fit([[1, 0], [0, 2]]); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_make_synthetic_is_seeded_power_law_and_duplicate_free():
    a = fastmf.datasets.make_synthetic(2000, 300, 20_000, random_state=3)
    b = fastmf.datasets.make_synthetic(2000, 300, 20_000, random_state=3)
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x, y)
    keys = a.rows.astype(np.int64) * 300 + a.cols
    assert np.unique(keys).size == 20_000
    assert set(np.unique(a.values)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    item_counts = np.sort(np.bincount(a.cols, minlength=300))[::-1]
    assert item_counts[:30].sum() > 3 * item_counts[-30:].sum()  # a popular head, a long tail
    with pytest.raises(ValueError, match="too dense"):
        fastmf.datasets.make_synthetic(10, 10, 50)


def test_make_synthetic_binary_responses():
    data = fastmf.datasets.make_synthetic(500, 100, 5_000, binary=True, random_state=1)
    assert set(np.unique(data.values)) == {-1.0, 1.0}
    fastmf.BinaryMF(k=4, n_epochs=2, tol=None).fit(data[:3], shape=data.shape)
