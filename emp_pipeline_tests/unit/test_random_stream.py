"""RandomStream draws numpy's numbers: long mixed sequences replayed against Generator(PCG64) itself."""

from __future__ import annotations

import numpy as np
import pytest

from emp_pipeline.domain.random_stream import RandomStream


@pytest.mark.parametrize("seed", [0, 1, 7, 123_456, 2**31 - 1])
def test_every_draw_equals_numpys_in_any_interleaving(seed: int) -> None:
    numpy_stream = np.random.Generator(np.random.PCG64(seed))
    stream = RandomStream(seed)
    script = np.random.default_rng(seed + 99)
    for step in range(3000):
        kind = int(script.integers(7))
        if kind == 0:
            high = int(script.integers(1, 400))
            pair = (int(numpy_stream.integers(high)), stream.integers(high))
        elif kind == 1:
            low = int(script.integers(-5, 5))
            high = low + int(script.integers(1, 9))
            pair = (int(numpy_stream.integers(low, high)), stream.integers(low, high))
        elif kind == 2:
            n, k = int(script.integers(4, 500)), int(script.integers(1, 5))
            pair = (numpy_stream.choice(n, size=k, replace=False).tolist(), stream.sample(n, k))
        elif kind == 3:
            pair = (numpy_stream.random(), stream.random())
        elif kind == 4:
            pair = (numpy_stream.normal(0.0, 0.3), stream.normal(0.0, 0.3))
        elif kind == 5:
            pair = (numpy_stream.uniform(0.1, 1.0), stream.uniform(0.1, 1.0))
        else:
            # Ranges near 2**32 exercise Lemire's rejection branch.
            high = 2**32 - int(script.integers(1, 2**20))
            pair = (int(numpy_stream.integers(high)), stream.integers(high))
        assert pair[0] == pair[1], f"step {step}, draw kind {kind}"


def test_out_of_range_requests_are_refused() -> None:
    stream = RandomStream(0)
    with pytest.raises(ValueError, match="high - low"):
        stream.integers(0)
    with pytest.raises(ValueError, match="k <= n"):
        stream.sample(3, 4)
    with pytest.raises(ValueError, match="n/50"):
        stream.sample(20_000, 1_000)
