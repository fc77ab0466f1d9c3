"""Check the policy's latency model against the simulator: one replica, Poisson load, several batch sizes.

    python -m slo_sim.calibrate

Prints, per max batch size and load (as a share of saturation), the simulated P99 against the predicted.
"""

from __future__ import annotations

from model_server.loadgen import traces
from slo_operator.queueing import predicted_p99_s, profile_table, saturation_qps
from slo_sim.bench import SERVER_DEFAULT_DELAY_S, load_profile
from slo_sim.fleet import ServerSpec
from slo_sim.oracle import window_p99

LOADS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def main() -> int:
    profile = load_profile()
    spec = ServerSpec(profile, SERVER_DEFAULT_DELAY_S, 10**6)
    table = profile_table(profile)
    print("max batch | load: simulated p99 / predicted p99 (ms)")
    for batch in (1, 4, 8, 32):
        service = spec.service_times(batch)
        cells = []
        for load in LOADS:
            rate = load * saturation_qps(table, batch)
            arrivals = traces.arrival_times(traces.constant(rate, 60), seed=3)
            simulated, _ = window_p99(arrivals, 1, batch, spec, 0, service)
            predicted = predicted_p99_s(table, rate, batch, SERVER_DEFAULT_DELAY_S)
            cells.append(f"{load:.0%}: {simulated * 1e3:.1f}/{predicted * 1e3:.1f}")
        print(f"{batch:>9} | " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
