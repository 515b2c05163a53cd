"""Generate the query sets (one JSONL batch per workload) with the repetition of real traffic.

Each query picks an intent (a question type, Zipf-popular), fills its slots with entities drawn from
Zipf-like popularity (regions, years, segments, titles, people, places), and phrases it with one of
several paraphrases chosen uniformly. With probability EXACT_REPEAT it is instead an exact repeat of
an earlier query, drawn uniformly from the queries so far (so popular queries repeat more). Entity
lists follow the vocabularies of the data generators in workloads/data, most popular first.

    python -m workloads.make_queries            # writes workloads/<name>.jsonl for every workload
    python -m workloads.make_queries --stats    # prints the README table without writing
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

import numpy as np

from workloads.data.imdb import ADJECTIVES, FIRST_F, FIRST_M, GENRES, LAST, NOUNS
from workloads.data.wiki import PLACES

HERE = Path(__file__).resolve().parent
EXACT_REPEAT = 0.15  # share of queries that repeat an earlier query verbatim
ZIPF_S = 1.0  # popularity skew of entities and intents
N_QUERIES = 1200
N_DEMO = 24

Slots = dict[str, list]
Intent = tuple[str, list[str]]  # (intent id, paraphrases with {slot} holes)

TPCH_SLOTS: Slots = {
    "region": ["ASIA", "EUROPE", "AMERICA", "AFRICA", "MIDDLE EAST"],
    "year": [1994, 1995, 1996, 1993, 1997, 1992, 1998],
    "segment": ["BUILDING", "AUTOMOBILE", "MACHINERY", "HOUSEHOLD", "FURNITURE"],
    "nation": ["CHINA", "GERMANY", "UNITED STATES", "JAPAN", "FRANCE", "INDIA", "CANADA", "BRAZIL", "RUSSIA"],
    "brand": [f"Brand#{m}{n}" for m in (1, 2, 3, 4, 5) for n in (3, 1, 2, 4, 5)],
    "shipmode": ["MAIL", "SHIP", "AIR", "TRUCK", "RAIL", "FOB"],
    "size": [15, 1, 10, 25, 50, 5, 45],
    "type": ["BRASS", "STEEL", "TIN", "COPPER", "NICKEL"],
    "discount": [0.05, 0.06, 0.04, 0.07],
    "qty": [24, 25, 20, 30],
}
TPCH_INTENTS: list[Intent] = [
    (
        "nation_revenue",
        [
            "What was the revenue by nation in {region} in {year}?",
            "Show me {region} revenue per nation for {year}.",
            "In {year}, which nations in {region} brought in the most revenue?",
        ],
    ),
    (
        "segment_priority",
        [
            "How are {segment} customers' orders split by priority in {year}?",
            "Order priorities for the {segment} segment in {year}, please.",
            "In {year}, what do {segment} orders look like by priority?",
        ],
    ),
    (
        "supplier_cost",
        [
            "Which suppliers in {region} are cheapest for size={size} type={type}?",
            "Cheapest {region} suppliers for parts of size={size} type={type}?",
            "Find low-cost suppliers in {region}, size={size} type={type}.",
        ],
    ),
    (
        "brand_profit",
        [
            "What is the profit by nation for {brand}?",
            "How profitable is {brand} across nations?",
            "Break down {brand} profit by nation and year.",
        ],
    ),
    (
        "shipping",
        [
            "Are {shipmode} shipments late more often in {year}?",
            "How did {shipmode} deliveries perform in {year}?",
            "Late-delivery picture for {shipmode} in {year}?",
        ],
    ),
    (
        "discount",
        [
            "What revenue came from discount={discount} items with qty<{qty} in {year}?",
            "Revenue impact in {year} of discount={discount} for qty<{qty}?",
            "In {year}, how much revenue did discount={discount} bring on qty<{qty} lines?",
        ],
    ),
    (
        "nation_trade",
        [
            "How does {nation} trade with {region} in {year}?",
            "Summarize {nation} supplier activity in {year} for {region} customers.",
            "Trade volume between {nation} and {region} in {year}?",
        ],
    ),
]

TITLES = (
    [f"The {a} {n}" for a in ADJECTIVES[:8] for n in NOUNS[:8]]
    + [f"{a} {n}" for a in ADJECTIVES[:8] for n in NOUNS[:8]]
    + [f"The {n}" for n in NOUNS[:12]]
)
TITLES.sort(
    key=lambda t: sum(
        ADJECTIVES.index(w) if w in ADJECTIVES else NOUNS.index(w) for w in t.split() if w != "The"
    )
)
PEOPLE = [f"{f} {last}" for i in range(8) for f, last in ((FIRST_M[i], LAST[i]), (FIRST_F[i], LAST[i + 1]))]
IMDB_SLOTS: Slots = {
    "title": TITLES,
    "person": PEOPLE,
    "genre": list(GENRES[:12]),
    "decade": ["1990s", "2000s", "2010s", "1980s", "1970s"],
}
IMDB_INTENTS: list[Intent] = [
    (
        "title_info",
        [
            'Tell me about "{title}".',
            'What is "{title}" about and how is it rated?',
            'Is "{title}" worth watching?',
        ],
    ),
    (
        "title_cast",
        [
            'Who stars in "{title}"?',
            'Who was in the cast of "{title}"?',
            'List the main actors of "{title}".',
        ],
    ),
    (
        "person",
        [
            'What movies has "{person}" been in?',
            'Give me the filmography of "{person}".',
            'Which titles is "{person}" best known for?',
        ],
    ),
    (
        "genre",
        [
            'Best "{genre}" titles of the {decade}?',
            'Top rated "{genre}" movies from the {decade}.',
            'Recommend a "{genre}" film from the {decade}.',
        ],
    ),
    (
        "akas",
        [
            'Under which names was "{title}" released abroad?',
            'Alternative titles of "{title}"?',
            'What is "{title}" called in other countries?',
        ],
    ),
]

TOPICS = (
    [f"History of {p}" for p in PLACES[:12]]
    + [f"{n} of {p}" for n in NOUNS[:6] for p in PLACES[:6]]
    + [f"{a} {n}" for a in ADJECTIVES[:6] for n in NOUNS[:6]]
    + [f"{f} {last}" for f, last in zip(FIRST_M, LAST, strict=False)]
)
WIKI_SLOTS: Slots = {"topic": TOPICS, "place": list(PLACES)}
WIKI_INTENTS: list[Intent] = [
    (
        "overview",
        ['Give me an overview of "{topic}".', 'What is "{topic}"?', 'Summarize the article "{topic}".'],
    ),
    (
        "timeline",
        [
            'What is the timeline of "{topic}"?',
            'Key dates for "{topic}"?',
            'How did "{topic}" develop over time?',
        ],
    ),
    (
        "related",
        [
            'Which pages are related to "{topic}"?',
            'What links to "{topic}"?',
            'Find topics connected to "{topic}".',
        ],
    ),
    (
        "place",
        [
            'What is notable about "{place}"?',
            'Tell me about "{place}" and its history.',
            'Which people and places are linked to "{place}"?',
        ],
    ),
]

POLICIES = [
    "ban cars from downtown",
    "make public transport free",
    "adopt a four-day work week",
    "tax sugary drinks",
    "ban short-term rentals",
    "build more nuclear power",
    "abolish tipping",
    "make voting mandatory",
    "ban phones in schools",
    "host the Olympics",
    "cap rents",
    "plant a million trees",
]
LLM_SLOTS: Slots = {
    "policy": POLICIES,
    "n": list(range(2, 100)),
    "m": list(range(11, 60)),
    "city": list(PLACES),
    "thing": [n.lower() for n in NOUNS],
}
VOTING_INTENTS: list[Intent] = [
    (
        "yes_no",
        [
            "Should {city} {policy}? Answer yes or no.",
            "Yes or no: should {city} {policy}?",
            "Give a one-word verdict: should {city} {policy}?",
        ],
    ),
    ("arith", ["What is {n} times {m}?", "Compute {n} * {m}.", "Multiply {n} by {m}."]),
    (
        "capital",
        ["Which country is {city} in?", "{city} is a city in which country?", "Name the country of {city}."],
    ),
]
DEBATE_INTENTS: list[Intent] = [
    (
        "motion",
        [
            "Should {city} {policy}?",
            "Debate: should {city} {policy}?",
            "Argue both sides: should {city} {policy}?",
        ],
    ),
]
MULTITURN_INTENTS: list[Intent] = [
    (
        "plan",
        [
            "I am visiting {city}. What should I see first?",
            "Plan my first day in {city}.",
            "What are the must-sees in {city}?",
        ],
    ),
    (
        "explain",
        ["Explain how a {thing} works.", "What is a {thing}, simply put?", "Describe a {thing} to a child."],
    ),
]
FOLLOW_UPS = {
    "plan": [
        ["What about food nearby?", "Where should I eat?", "Any local dish to try?"],
        ["And if it rains?", "What can I do in the evening?", "How do I get around?"],
    ],
    "explain": [
        ["Give an example.", "Why does it matter?", "Who invented it?"],
        ["What is a common misconception?", "Summarize in one line.", "How will it change?"],
    ],
}

# workload -> (input field, or 'multiturn' for q1/q2/q3; intents; slots)
WORKLOADS: dict[str, tuple[str, list[Intent], Slots]] = {
    "demo": ("question", TPCH_INTENTS[:3], TPCH_SLOTS),
    "tpch_trident": ("question", TPCH_INTENTS, TPCH_SLOTS),
    "tpch_fanout": ("question", TPCH_INTENTS, TPCH_SLOTS),
    "tpch_layered": ("question", TPCH_INTENTS, TPCH_SLOTS),
    "imdb_diamond": ("question", IMDB_INTENTS, IMDB_SLOTS),
    "imdb_triple_chain": ("question", IMDB_INTENTS, IMDB_SLOTS),
    "wiki_long_chain": ("question", WIKI_INTENTS, WIKI_SLOTS),
    "wiki_bridges": ("question", WIKI_INTENTS, WIKI_SLOTS),
    "llm_voting": ("question", VOTING_INTENTS, LLM_SLOTS),
    "llm_debate": ("motion", DEBATE_INTENTS, LLM_SLOTS),
    "llm_multiturn": ("multiturn", MULTITURN_INTENTS, LLM_SLOTS),
}


def _zipf(rng: np.random.Generator, n: int) -> int:
    w = 1.0 / np.arange(1, n + 1) ** ZIPF_S
    return int(rng.choice(n, p=w / w.sum()))


def generate(name: str, n: int) -> tuple[list[dict], list[str]]:
    """`n` rows for a workload and the intent key (intent + slot values) of each, seeded by the name."""
    fmt, intents, slots = WORKLOADS[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    rows: list[dict] = []
    keys: list[str] = []
    for _ in range(n):
        if rows and rng.random() < EXACT_REPEAT:
            i = int(rng.integers(len(rows)))
            rows.append(rows[i])
            keys.append(keys[i])
            continue
        intent, phrasings = intents[_zipf(rng, len(intents))]
        values = {s: slots[s][_zipf(rng, len(slots[s]))] for s in slots}
        text = phrasings[int(rng.integers(len(phrasings)))].format(**values)
        keys.append(
            json.dumps([intent, {s: values[s] for s in slots if "{" + s + "}" in "".join(phrasings)}])
        )
        rows.append(_row(fmt, text, intent, rng))
    return rows, keys


def _row(fmt: str, text: str, intent: str, rng: np.random.Generator) -> dict:
    if fmt == "multiturn":
        first, second = (options[_zipf(rng, len(options))] for options in FOLLOW_UPS[intent])
        return {"q1": text, "q2": first, "q3": second}
    return {fmt: text}


def stats(rows: list[dict], keys: list[str]) -> dict[str, float]:
    distinct = len({json.dumps(r, sort_keys=True) for r in rows})
    return {
        "inputs": len(rows),
        "distinct": distinct,
        "exact_dup_pct": round(100 * (1 - distinct / len(rows)), 1),
        "distinct_intents": len(set(keys)),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stats", action="store_true", help="print the statistics table only")
    args = ap.parse_args(argv)
    print("| batch | inputs | distinct | exact duplicates | distinct intents (question type + entities) |")
    print("|---|---:|---:|---:|---:|")
    for name in WORKLOADS:
        rows, keys = generate(name, N_DEMO if name == "demo" else N_QUERIES)
        s = stats(rows, keys)
        print(
            f"| {name}.jsonl | {s['inputs']} | {s['distinct']} | {s['exact_dup_pct']}% | {s['distinct_intents']} |"
        )
        if not args.stats:
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            (HERE / f"{name}.jsonl").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
