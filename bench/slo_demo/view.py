"""What the person running the demo sees while it runs.

On a terminal: a ``rich`` live panel (time, offered and achieved QPS, P99 against the target,
replicas, batch size) with each decision's reason printed above it as it happens. Otherwise
(CI, a pipe): plain log lines, one every few seconds and one per decision or actuator event.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from slo_demo.record import DecisionRow, Tick, format_seconds


class View(Protocol):
    def __enter__(self) -> View: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    def message(self, text: str) -> None: ...

    def tick(self, tick: Tick) -> None: ...

    def decision(self, row: DecisionRow) -> None: ...


def _decision_line(row: DecisionRow) -> str:
    verb = "ACT " if row.changed else "hold"
    return (
        f"[{row.t_s:6.1f}s] decision {verb} replicas={row.replicas} batch={row.max_batch_size} "
        f"(P99 {format_seconds(row.observed_p99_s)}, "
        f"{'–' if row.observed_qps is None else f'{row.observed_qps:.0f}'} qps): {row.reason}"
    )


class PlainView:
    """For a pipe or CI log: a status line every ``every_s`` seconds, every decision that acts."""

    def __init__(self, target_p99_s: float, *, every_s: float = 5.0) -> None:
        self._target = target_p99_s
        self._every_s = every_s
        self._next_s = 0.0

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def message(self, text: str) -> None:
        print(text, flush=True)

    def tick(self, tick: Tick) -> None:
        if tick.t_s + 1e-9 < self._next_s:
            return
        self._next_s = tick.t_s + self._every_s
        print(
            f"[{tick.t_s:6.1f}s] offered {tick.offered_qps:5.0f} qps  achieved {tick.achieved_qps:5.0f} qps  "
            f"P99 {format_seconds(tick.p99_s)} (prometheus {format_seconds(tick.controller_p99_s)}, "
            f"target {format_seconds(self._target)})  replicas {tick.ready_replicas}/{tick.replicas}  "
            f"batch {tick.max_batch_size}  failed {tick.failed}",
            flush=True,
        )

    def decision(self, row: DecisionRow) -> None:
        if row.changed:
            print(_decision_line(row), flush=True)


class RichView:
    """A live panel at the bottom of the terminal; decisions and events scroll above it."""

    def __init__(self, target_p99_s: float, title: str) -> None:
        self._target = target_p99_s
        self._title = title
        self._console = Console()
        self._live = Live(console=self._console, refresh_per_second=4, transient=False)
        self._last: Tick | None = None
        self._last_decision: DecisionRow | None = None

    def __enter__(self) -> RichView:
        self._live.__enter__()
        self._live.update(self._render())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._live.__exit__(exc_type, exc, traceback)

    def message(self, text: str) -> None:
        self._live.console.print(text, markup=False, highlight=False)

    def tick(self, tick: Tick) -> None:
        self._last = tick
        self._live.update(self._render())

    def decision(self, row: DecisionRow) -> None:
        self._last_decision = row
        style = "bold yellow" if row.changed else "dim"
        self._live.console.print(Text(_decision_line(row), style=style))
        self._live.update(self._render())

    def _render(self) -> Panel:
        table = Table.grid(padding=(0, 3))
        for _ in range(3):
            table.add_column()
        tick = self._last
        if tick is None:
            table.add_row("starting…")
        else:
            p99_ok = tick.p99_s is not None and tick.p99_s <= self._target
            table.add_row(
                Text(f"t {tick.t_s:4.0f} s"),
                Text(f"offered {tick.offered_qps:4.0f} qps"),
                Text(f"achieved {tick.achieved_qps:4.0f} qps"),
            )
            table.add_row(
                Text(
                    f"P99 {format_seconds(tick.p99_s)} (target {format_seconds(self._target)})",
                    style="green" if p99_ok else "bold red",
                ),
                Text(f"Prometheus P99 {format_seconds(tick.controller_p99_s)}"),
                Text(f"failed {tick.failed}", style="bold red" if tick.failed else ""),
            )
            table.add_row(
                Text(f"replicas {tick.ready_replicas}/{tick.replicas}", style="bold"),
                Text(f"processes {tick.processes}"),
                Text(f"max batch {tick.max_batch_size}", style="bold"),
            )
        lines: list[Table | Text] = [table]
        if self._last_decision is not None:
            lines.append(Text(f"last decision: {self._last_decision.reason}", style="italic"))
        return Panel(Group(*lines), title=self._title)


def make_view(target_p99_s: float, title: str, *, force_plain: bool = False) -> View:
    if force_plain or not sys.stdout.isatty():
        return PlainView(target_p99_s)
    return RichView(target_p99_s, title)
