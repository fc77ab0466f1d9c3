"""The fleet simulator, the oracle and the baselines (``slo_sim``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_server.loadgen import traces
from slo_operator.policy import Targets
from slo_sim.bench import load_profile, run_trace, summary_line
from slo_sim.fleet import (
    PROM_BUCKETS,
    Replica,
    ServerSpec,
    prometheus_histogram_quantile,
    run_replica,
)
from slo_sim.oracle import fewest_replicas, oracle
from slo_sim.policies import HpaPolicy, KedaPolicy, KpaPolicy, SloPolicy, StaticPolicy
from slo_sim.score import Score, dominates
from slo_sim.simulate import Observation, SimConfig, simulate


def test_one_replica_at_batch_one_is_an_md1_queue() -> None:
    """Known closed form: M/D/1 mean sojourn D + ρD/(2(1-ρ)) (Pollaczek–Khinchine) and P(no wait) = 1-ρ."""
    service, rate = 0.004, 175.0
    spec = ServerSpec({1: service}, max_batch_delay_s=0.0, max_queue_size=10**9)
    arrivals = traces.arrival_times(traces.constant(rate, 2000), seed=3)
    result = simulate(StaticPolicy(1, 1), arrivals, 2000, spec, SimConfig(), 1, 1)
    served = result.recorder.requests.sum()
    assert served == arrivals.size
    mean = result.recorder.latency_sum.sum() / served
    rho = rate * service
    assert mean == pytest.approx(service + rho * service / (2 * (1 - rho)), rel=0.04)
    replica = Replica(0.0, 0.0, 1, 0)
    direct = run_replica(replica, arrivals.tolist(), math.inf, [0.0, service], 0.0, 10**9, rate)
    waited = np.asarray(direct.batch_starts) - np.asarray(direct.served_arrivals)
    assert np.mean(waited <= 1e-12) == pytest.approx(1 - rho, abs=0.02)


def test_batches_take_what_waits_up_to_the_maximum() -> None:
    replica = Replica(0.0, 0.0, 4, 0)
    # Ten requests at once: batches of 4, 4, 2 back to back.
    result = run_replica(replica, [0.0] * 10, math.inf, [0.0, 1.0, 1.0, 1.0, 1.0], 0.0, 100, 0.0)
    assert result.batch_sizes == [4, 4, 2]
    assert result.batch_starts == [0.0, 1.0, 2.0]
    assert replica.free_s == 3.0


def test_a_full_queue_sheds_and_the_rest_carry_over() -> None:
    replica = Replica(0.0, 0.0, 1, 0)
    arrivals = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    result = run_replica(replica, arrivals, 10.0, [0.0, 5.0], 0.0, 2, 0.0)
    # 0.0 runs at once; 0.1 and 0.2 wait; 0.3..0.5 find two waiting and are shed.
    assert result.shed_arrivals == [0.3, 0.4, 0.5]
    assert result.served_arrivals == [0.0, 0.1]
    assert replica.pending == [0.2]


def test_the_batcher_holds_only_when_a_full_batch_is_due() -> None:
    replica = Replica(0.0, 0.0, 4, 0)
    holding = run_replica(
        replica, [0.0, 0.001, 0.002, 0.003], math.inf, [0.0] + [0.01] * 4, 0.005, 100, 2000.0
    )
    assert holding.batch_sizes == [4]
    assert holding.batch_starts == [0.003]
    quiet = run_replica(Replica(0.0, 0.0, 4, 0), [0.0, 0.001], math.inf, [0.0] + [0.01] * 4, 0.005, 100, 2.0)
    assert quiet.batch_sizes == [1, 1]


def test_prometheus_histogram_quantile() -> None:
    counts = np.zeros(len(PROM_BUCKETS) + 1, dtype=np.int64)
    counts[0] = 50  # <= 1 ms
    counts[1] = 50  # (1 ms, 1.5 ms]
    assert prometheus_histogram_quantile(0.5, counts) == pytest.approx(0.001)
    assert prometheus_histogram_quantile(0.99, counts) == pytest.approx(0.001 + 0.0005 * 49 / 50)
    counts[-1] = 1000  # +Inf bucket: Prometheus answers the last finite bound
    assert prometheus_histogram_quantile(0.99, counts) == PROM_BUCKETS[-1]
    assert math.isnan(prometheus_histogram_quantile(0.99, np.zeros_like(counts)))


def test_new_replicas_serve_only_after_startup_and_cost_from_creation() -> None:
    spec = ServerSpec({1: 0.001}, 0.0, 10**6)
    arrivals = traces.arrival_times(traces.constant(200, 120), seed=1)

    class AddOne:
        name = "add-one"
        control_interval_s = 10.0

        def reset(self, initial_replicas: int, initial_batch: int) -> None:
            pass

        def decide(self, observation: Observation) -> tuple[int, int]:
            return 2, 1

    result = simulate(AddOne(), arrivals, 120, spec, SimConfig(startup_s=30.0), 1, 1)
    assert result.timeline.ready[:3] == [1, 1, 1]  # at 10, 20, 30 s: the new pod (made at 10 s) starts
    assert result.timeline.ready[3] == 2  # ready at 40 s
    assert result.replica_seconds == pytest.approx(120 + 110, abs=0.5)
    assert result.scale_events == 1


def test_oracle_needs_more_replicas_for_more_load() -> None:
    spec = ServerSpec(load_profile(), 0.002, 1024)
    profile = traces.RateProfile("two-levels", 60.0, (500.0, 5000.0))
    arrivals = traces.arrival_times(profile, seed=0)
    best = oracle(arrivals, profile.duration_s, spec, 0.025, (1, 8, 32))
    assert best.replicas[0] < best.replicas[1]
    assert best.replica_seconds == 60.0 * sum(best.replicas)
    window = arrivals[arrivals >= 60.0]
    batch = best.batches[1]
    fewest = fewest_replicas(window, batch, spec, 0.025, 64, 1, spec.service_times(batch), 1)
    assert fewest is not None
    assert abs(fewest - best.replicas[1]) <= 1  # another seed's routing may need one more or one less


def _observation(**fields: float) -> Observation:
    base: dict[str, object] = {
        "time_s": 100.0,
        "current_replicas": 4,
        "ready_replicas": 4,
        "max_batch_size": 32,
        "prom_window_s": 60.0,
        "prom_newest_sample_s": 90.0,
        "qps": 1000.0,
        "p99_s": 0.01,
        "request_count": 60000.0,
        "mean_batch_size": 4.0,
        "mean_batch_duration_s": 0.005,
        "queue_depth": 0.0,
        "utilisation": 0.7,
        "concurrency_stable": 10.0,
        "concurrency_panic": 10.0,
        "profile": {1: 0.003},
    }
    base.update(fields)
    return Observation(**base)  # type: ignore[arg-type]


def test_hpa_follows_its_formula_tolerance_and_limits() -> None:
    hpa = HpaPolicy(batch=32, min_replicas=1, max_replicas=100)
    hpa.reset(4, 32)
    assert hpa.decide(_observation(utilisation=0.75)) == (4, 32)  # within the 0.1 tolerance
    assert hpa.decide(_observation(time_s=115.0, utilisation=1.0))[0] == math.ceil(4 * 1.0 / 0.7)
    # Scale-up is capped at max(4 pods, 100 %) per period.
    assert (
        hpa.decide(_observation(time_s=130.0, utilisation=1.0, current_replicas=2, ready_replicas=2))[0] <= 6
    )
    hpa.reset(10, 32)
    assert hpa.decide(_observation(current_replicas=10, ready_replicas=10, utilisation=0.7))[0] == 10
    # Scale-down only to the highest recommendation within the last 300 s.
    low = _observation(time_s=200.0, current_replicas=10, ready_replicas=10, utilisation=0.1)
    assert hpa.decide(low)[0] == 10
    later = _observation(time_s=500.0, current_replicas=10, ready_replicas=10, utilisation=0.1)
    assert hpa.decide(later)[0] == math.ceil(10 * 0.1 / 0.7)


def test_keda_divides_the_rate_by_its_threshold() -> None:
    keda = KedaPolicy(batch=32, threshold_qps=300.0, min_replicas=1, max_replicas=100)
    keda.reset(4, 32)
    assert keda.decide(_observation(qps=3000.0)) == (8, 32)  # ceil(3000/300) = 10, capped at 4 + max(4, 4)
    assert keda.decide(_observation(time_s=130.0, qps=3000.0, current_replicas=8))[0] == 10


def test_kpa_panics_and_does_not_scale_down_while_panicking() -> None:
    kpa = KpaPolicy(batch=32, container_concurrency=10.0, min_replicas=1, max_replicas=100)
    kpa.reset(4, 32)
    target = 10.0 * 0.7
    calm = kpa.decide(_observation(concurrency_stable=4 * target, concurrency_panic=4 * target))
    assert calm[0] == 4
    burst = kpa.decide(
        _observation(time_s=102.0, concurrency_stable=5 * target, concurrency_panic=12 * target)
    )
    assert burst[0] == 12  # panic: the 6-s window rules
    after = kpa.decide(
        _observation(
            time_s=104.0,
            current_replicas=12,
            ready_replicas=12,
            concurrency_stable=target,
            concurrency_panic=target,
        )
    )
    assert after[0] == 12  # still in panic: no scale-down
    gone = kpa.decide(
        _observation(
            time_s=170.0,
            current_replicas=12,
            ready_replicas=12,
            concurrency_stable=target,
            concurrency_panic=target,
        )
    )
    assert gone[0] == 6  # panic over; scale-down at most halves per tick


def test_dominance_needs_no_worse_on_both_and_better_on_one() -> None:
    def s(attainment: float, cost: float) -> Score:
        return Score("p", "t", attainment, cost, cost / 100, 0, 0.01, 0, 1, 1.0)

    assert dominates(s(1.0, 100), s(1.0, 120))
    assert dominates(s(1.0, 100), s(0.9, 100))
    assert not dominates(s(1.0, 100), s(1.0, 100))
    assert not dominates(s(0.95, 90), s(1.0, 100))


@pytest.mark.slow
def test_a_short_bench_run_scores_every_policy_and_prints_the_summary() -> None:
    """End to end on a two-minute step: the same path ``make bench-policy`` takes, smaller."""
    spec = ServerSpec(load_profile(), 0.002, 1024)
    targets = Targets(p99_target_s=0.025, max_replicas=20, max_batch_size=32, max_batch_delay_s=0.002)
    profile = traces.step(500, 2000, at_s=60, duration_s=180, name="tiny-step")
    outcome = run_trace(profile, spec, targets, SimConfig(p99_target_s=0.025))
    names = [s.policy for s in outcome.scores]
    assert names == ["slo-policy", "hpa", "keda-prometheus", "knative-kpa", "static-peak"]
    assert all(0.0 <= s.attainment <= 1.0 for s in outcome.scores)
    assert all(s.replica_seconds > 0 for s in outcome.scores)
    static = outcome.scores[-1]
    assert static.scale_events == 0
    assert outcome.oracle.replica_seconds <= static.replica_seconds
    line = summary_line([outcome])
    assert line.startswith("bench-policy: worst_attainment=")
    assert "cost_vs_oracle=" in line
    assert line.endswith("/4")
    assert isinstance(outcome.runs[0], type(outcome.runs[1]))
    assert SloPolicy(targets).name == "slo-policy"
