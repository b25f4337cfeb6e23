"""Random sequences of transport calls give the same protocol events,
results and log records on ferroloop as on stock asyncio (see
_differential.py for what is generated and compared).

Fixed seeds, so a failure names a seed that reproduces it:
``python tests/_differential.py --kinds KIND --start SEED --seeds 1``."""

import pytest

from _differential import compare, first_difference

# Kinds whose records do not depend on how fast a loop reads: TCP and TLS
# can legitimately differ (see _differential.py) and are run by hand.
KINDS = ("unix", "buffered", "pipe", "datagram")
BATCH = 10
BATCHES = 3


@pytest.mark.parametrize("first", range(0, BATCH * BATCHES, BATCH))
@pytest.mark.parametrize("kind", KINDS)
def test_random_transport_calls_match_stock(kind, first):
    import ferroloop

    differing = []
    for seed in range(first, first + BATCH):
        diff = compare(kind, seed, ferroloop.new_event_loop)
        if diff:
            differing.append(f"{kind} seed {seed}:\n{first_difference(*diff)}")
    if differing:
        pytest.fail("\n".join(differing), pytrace=False)
