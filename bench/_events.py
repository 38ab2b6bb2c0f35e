"""The benchmark's events: built the same way, byte for byte, in every subprocess.

Every variant gets an identical list (same ids, timestamps and payloads), built before
any timer starts, from a fixed seed. :func:`digest` fingerprints the list so the parent
can check that every subprocess really measured the same events.
"""

from __future__ import annotations

import hashlib
import random

from riskaudit import EventPriority, EventType, RiskEvent

SEED = 20261126
BASE_TS_NS = 1_795_680_000_000_000_000  # 2026-11-26T00:00:00Z, 20 µs apart
SYMBOLS = ("ESZ6", "NQZ6", "RTYZ6", "YMZ6", "CLF7", "GCG7", "ZNH7", "6EZ6")
STRATEGIES = ("stat-arb-3", "momo-1", "mm-es-2", "basis-7")


def build_events(n: int, seed: int = SEED) -> list[RiskEvent]:
    """``n`` pre-trade checks like the risk engine's, deterministic for ``seed``."""
    rng = random.Random(seed)
    events: list[RiskEvent] = []
    for i in range(n):
        bits = (rng.getrandbits(128) & ~((0xF000 << 64) | (0xC000 << 48))) | (
            (0x4000 << 64) | (0x8000 << 48)
        )
        h = f"{bits:032x}"
        price = round(rng.uniform(4900.0, 5100.0) * 4) / 4
        events.append(
            RiskEvent(
                EventType.PRE_TRADE_CHECK,
                EventPriority.CRITICAL,
                "risk-engine-01",
                {
                    "order_id": f"O-{i + 1}",
                    "symbol": rng.choice(SYMBOLS),
                    "side": rng.choice(("BUY", "SELL")),
                    "qty": rng.randint(1, 100),
                    "price": price,
                    "outcome": "REJECT" if rng.random() < 0.05 else "ACCEPT",
                },
                {"strategy": rng.choice(STRATEGIES)},
                event_id=f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
                timestamp_ns=BASE_TS_NS + i * 20_000,
            )
        )
    return events


def digest(events: list[RiskEvent]) -> str:
    """A short fingerprint of the list (ids, payload sizes, timestamps)."""
    h = hashlib.sha256()
    for e in events:
        h.update(e.event_id.encode())
        h.update(repr(e.data).encode())
        h.update(b"%d" % e.timestamp_ns)
    return h.hexdigest()[:16]
