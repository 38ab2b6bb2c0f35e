"""A simulated intraday risk engine, publishing through the bus.

It does what a real engine's audit trail must capture: pre-trade checks of random
orders against position and notional limits, the occasional limit breach, one
kill-switch activation (and its reset), and one risk-limit change. Used by
``riskaudit demo`` and, later, by ``riskaudit serve --demo``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from riskaudit.bus import RiskEventBus
from riskaudit.events import EventPriority, EventType, RiskEvent

SYMBOLS = ("ESZ6", "NQZ6", "CLF7", "GCG7", "ZNH7", "6EZ6")
PRICES = {
    "ESZ6": 5012.25,
    "NQZ6": 17950.5,
    "CLF7": 71.42,
    "GCG7": 2044.1,
    "ZNH7": 110.5,
    "6EZ6": 1.0875,
}


@dataclass(slots=True)
class DemoStats:
    """What the simulation published."""

    events: int = 0
    accepted: int = 0
    rejected: int = 0
    breaches: int = 0
    kill_switch: list[str] = field(default_factory=list)


class RiskEngineSimulator:
    """A toy risk engine: enough state to produce a realistic event mix."""

    def __init__(
        self, bus: RiskEventBus, *, seed: int | None = None, source: str = "risk-engine-demo"
    ):
        self.bus = bus
        self.rng = random.Random(seed)
        self.source = source
        self.max_position = 100
        self.max_notional = 25_000_000.0
        self.positions = dict.fromkeys(SYMBOLS, 0)
        self.halted = False
        self.stats = DemoStats()
        bus.subscribe(EventType.KILL_SWITCH, self._on_kill_switch)
        bus.subscribe(EventType.LIMIT_BREACH, self._on_breach, priorities=[EventPriority.CRITICAL])

    def _on_kill_switch(self, event: RiskEvent) -> None:
        self.halted = event.data.get("action") == "activate"
        self.stats.kill_switch.append(str(event.data.get("action")))

    def _on_breach(self, event: RiskEvent) -> None:
        self.stats.breaches += 1

    def _publish(
        self,
        event_type: EventType,
        priority: EventPriority,
        data: dict[str, object],
        metadata: dict[str, object] | None = None,
    ) -> None:
        self.bus.publish(
            RiskEvent(
                event_type, priority, self.source, data, metadata or {"strategy": "stat-arb-3"}
            )
        )
        self.stats.events += 1

    def step(self, i: int, total: int) -> None:
        """Publish the events of one simulated order (and the scripted ones)."""
        if i == total // 2:
            self._change_limit()
        if i == (2 * total) // 3:
            self._kill_switch("activate", "daily loss limit approached")
        if i == (2 * total) // 3 + max(1, total // 20):
            self._kill_switch("reset", "risk officer reviewed the book")
        if i % 500 == 0:
            self._publish(EventType.HEARTBEAT, EventPriority.LOW, {"i": i})
            return
        symbol = self.rng.choice(SYMBOLS)
        side = self.rng.choice(("BUY", "SELL"))
        qty = self.rng.randint(1, 30)
        price = round(PRICES[symbol] * (1 + self.rng.gauss(0, 0.001)), 4)
        signed = qty if side == "BUY" else -qty
        new_pos = self.positions[symbol] + signed
        notional = abs(new_pos) * price * 50
        reasons = []
        if self.halted:
            reasons.append("kill switch active")
        if abs(new_pos) > self.max_position:
            reasons.append("max_position")
        if notional > self.max_notional:
            reasons.append("max_notional")
        outcome = "REJECT" if reasons else "ACCEPT"
        self._publish(
            EventType.PRE_TRADE_CHECK,
            EventPriority.CRITICAL,
            {
                "order_id": f"O-{i:07d}",
                "symbol": symbol,
                "side": side,
                "qty": qty,
                "price": price,
                "position_after": new_pos,
                "outcome": outcome,
                "reasons": reasons,
            },
        )
        if outcome == "ACCEPT":
            self.positions[symbol] = new_pos
            self.stats.accepted += 1
            self._publish(
                EventType.POSITION_UPDATE,
                EventPriority.HIGH,
                {"symbol": symbol, "position": new_pos, "price": price},
            )
        else:
            self.stats.rejected += 1
            # One breach per limit, each with its own limit value and observed quantity
            # in the same unit (contracts for the position, USD for the notional).
            breached = {
                "max_position": (self.max_position, abs(new_pos), "contracts"),
                "max_notional": (self.max_notional, round(notional, 2), "USD"),
            }
            for limit in reasons:
                if limit in breached:
                    value, observed, unit = breached[limit]
                    self._publish(
                        EventType.LIMIT_BREACH,
                        EventPriority.CRITICAL,
                        {
                            "symbol": symbol,
                            "limit": limit,
                            "limit_value": value,
                            "observed": observed,
                            "unit": unit,
                            "order_id": f"O-{i:07d}",
                        },
                    )

    def _change_limit(self) -> None:
        old = self.max_position
        self.max_position = int(old * 1.5)
        self._publish(
            EventType.CONFIG_UPDATE,
            EventPriority.HIGH,
            {"limit": "max_position", "old": old, "new": self.max_position},
            {"actor": "risk-officer", "approved_by": "chief-risk-officer", "ticket": "RISK-1042"},
        )

    def _kill_switch(self, action: str, reason: str) -> None:
        # Switching trading back on is a four-eyes decision (RTS 6): actor and approver.
        meta: dict[str, object] = (
            {"actor": "risk-engine", "risk_reducing": True}
            if action == "activate"
            else {"actor": "risk-officer", "approved_by": "head-of-trading"}
        )
        self._publish(
            EventType.KILL_SWITCH,
            EventPriority.CRITICAL,
            {"action": action, "scope": "stat-arb-3", "reason": reason},
            meta,
        )

    def run_forever(
        self, rate: float, should_stop: Callable[[], bool], cycle: int = 20_000
    ) -> None:
        """The simulation in cycles of ``cycle`` events (each with its scripted limit
        change and kill switch), until ``should_stop()`` — for ``serve --demo``."""
        while not should_stop():
            self.stats = DemoStats()
            self.run(cycle, rate, should_stop)

    def run(
        self, events: int, rate: float = 0.0, should_stop: Callable[[], bool] = lambda: False
    ) -> DemoStats:
        """Simulate until about ``events`` events were published, at ``rate`` per second
        (0 = as fast as possible)."""
        start = time.monotonic()
        i = 0
        while self.stats.events < events and not should_stop():
            self.step(i, max(1, events // 2))
            i += 1
            if rate > 0:
                ahead = self.stats.events / rate - (time.monotonic() - start)
                if ahead > 0.002:
                    time.sleep(ahead)
        return self.stats
