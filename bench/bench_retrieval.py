"""Retrieval over the labelled questions: hit@1, hit@3, fact in the offline answer, latency.

    .venv/bin/python bench/bench_retrieval.py [--misses tune|held] [--rounds N]

The questions are ``tests/domain/retrieval_labelled.tsv``: a ``tune`` part used
while tuning retrieval and a ``held`` part written with it but never tuned on.
Latency is one question's retrieval, measured over every question ``--rounds``
times: cold (a knowledge base without its per-word and per-question caches, as for
a question never seen) and warm (the daemon's, where repeated questions and words
are cached).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from concierge.domain import KnowledgeBase, load_knowledge, load_languages, load_triage
from concierge.providers import OfflineAdapter
from concierge.settings import DEFAULT_CONFIG_DIR
from tests.domain.retrieval_set import evaluate, load_questions, score

CONFIG = DEFAULT_CONFIG_DIR


def _latencies(knowledge: KnowledgeBase, texts: list[str], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        for text in texts:
            started = time.perf_counter()
            knowledge.search(text, limit=4)
            samples.append(time.perf_counter() - started)
    return samples


def _percentiles(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered) * 1e6
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6
    return (
        f"{name}: p50 {p50:.0f} µs, p99 {p99:.0f} µs, mean {statistics.fmean(ordered) * 1e6:.0f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--misses",
        choices=("tune", "held"),
        help="print the misses of one part (look at held's only after tuning)",
    )
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    started = time.perf_counter()
    languages = load_languages(CONFIG / "languages")
    knowledge = load_knowledge(CONFIG, languages.analyzer())
    loaded_s = time.perf_counter() - started
    triage = load_triage(CONFIG / "triage.toml", languages)
    offline = OfflineAdapter(knowledge, languages)
    questions = load_questions()
    outcomes = [
        evaluate(q, knowledge=knowledge, languages=languages, triage=triage, offline=offline)
        for q in questions
    ]
    print(
        f"knowledge base: {len(knowledge.sections)} sections, {len(knowledge.passages)} passages, "
        f"languages and index loaded in {loaded_s * 1000:.0f} ms"
    )
    for name in ("tune", "held"):
        print(score(o for o in outcomes if o.question.split == name).line(name))
    for language in ("fr", "en"):
        part = [o for o in outcomes if o.question.language == language]
        print(score(part).line(f"{language} (both parts)"))
    print(score(outcomes).line("all"))
    if args.misses:
        for o in outcomes:
            if o.question.split == args.misses and not (o.hit1 and o.fact_found):
                print(f"  [{o.question.split}] {o.question.text!r}: ranked {list(o.ranked)}")
                if not o.fact_found:
                    print("    answer: " + o.answer.replace("\n", " / ")[:240])

    texts = [q.text for q in questions]
    cold = KnowledgeBase(
        knowledge.sections, analyzer=languages.analyzer(), synonyms=knowledge.synonyms, cache_size=0
    )
    print(_percentiles("retrieval, cold (no cache)", _latencies(cold, texts, args.rounds)))
    print(
        _percentiles("retrieval, warm (daemon caches)", _latencies(knowledge, texts, args.rounds))
    )


if __name__ == "__main__":
    main()
