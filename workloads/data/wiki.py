"""FineWiki-like pages into a DuckDB file: the ``pages`` and ``finewiki_answers`` tables that the
Halo FineWiki templates query (column names as in HuggingFaceFW/finewiki).

Pages are English articles plus language variants, category pages and list pages, with wikitext
whose words and [[links]] are Zipf-distributed (see README.md).

    python -m workloads.data.wiki PATH [SCALE [SEED]]
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from ._build import build, zipf_weights
from .imdb import ADJECTIVES, FIRST_F, FIRST_M, LAST, NOUNS

VERSION = 1
PAGES_PER_SCALE = 5_000
LANGS = ["de", "fr", "es", "it", "ja", "ru", "pt", "nl"]
PLACES = (
    "Paris London Berlin Tokyo Lagos Lima Oslo Cairo Delhi Sydney Toronto Vienna Prague Dublin Lisbon "
    "Madrid Rome Athens Seoul Nairobi Quito Havana Kyoto Munich Geneva Boston Chicago Denver Austin Osaka"
).split()
SECTIONS = [
    "History",
    "Geography",
    "Etymology",
    "Career",
    "Legacy",
    "Reception",
    "Background",
    "Description",
    "Culture",
    "See also",
]
FILLER = "the of and in a to was is for on as by with from that at which it were has an its also".split()


def _titles(rng: np.random.Generator, n: int) -> list[str]:
    """Distinct English titles, common words first (Zipf)."""
    adj_p, noun_p = zipf_weights(len(ADJECTIVES), 0.8), zipf_weights(len(NOUNS), 0.8)
    place_p, last_p = zipf_weights(len(PLACES), 0.8), zipf_weights(len(LAST), 0.8)
    seen: dict[str, None] = {}
    while len(seen) < n:
        kind = rng.integers(10)
        noun = NOUNS[rng.choice(len(NOUNS), p=noun_p)]
        place = PLACES[rng.choice(len(PLACES), p=place_p)]
        if kind < 3:
            first = (FIRST_M + FIRST_F)[rng.integers(len(FIRST_M) + len(FIRST_F))]
            title = f"{first} {LAST[rng.choice(len(LAST), p=last_p)]}"
        elif kind < 5:
            title = f"{ADJECTIVES[rng.choice(len(ADJECTIVES), p=adj_p)]} {noun}"
        elif kind == 5:
            title = f"{noun} of {place}"
        elif kind == 6:
            title = f"History of {place}" if rng.random() < 0.5 else f"List of {noun.lower()}s in {place}"
        elif kind == 7:
            title = f"Category:{noun}s" if rng.random() < 0.5 else f"Category:People from {place}"
        elif kind == 8:
            title = f"{place} {noun} ({rng.choice(['film', 'album', 'novel', 'band'])})"
        else:
            title = f"{noun} {place}"
        if title in seen and rng.random() < 0.5:
            title = f"{title} ({1800 + rng.integers(225)})"
        seen[title] = None
    return list(seen)


def _wikitext(rng: np.random.Generator, title: str, links: list[str], words: list[str]) -> str:
    """Lead sentence, then sections of sentences over ``words``, with [[links]] sprinkled in."""
    parts = [f"'''{title}''' is a {words[0]} {words[1]} related to [[{links[0]}]]."]
    pos, more = 2, iter(links[1:])
    for section in rng.choice(SECTIONS, rng.integers(1, 5), replace=False):
        parts.append(f"\n== {section} ==\n")
        for _ in range(rng.integers(2, 9)):
            length = int(rng.integers(6, 18))
            sentence = words[pos : pos + length]
            pos = (pos + length) % (len(words) - 20)
            if rng.random() < 0.3:
                sentence = [*sentence, f"[[{next(more, title)}]]"]
            text = " ".join(sentence)
            parts.append(text[:1].upper() + text[1:] + ". ")
    return "".join(parts)


def _words(
    rng: np.random.Generator,
    title: str,
    links: list[str],
    vocab: np.ndarray,
    vocab_p: np.ndarray,
    n: int = 400,
) -> list[str]:
    """Body words: 45% filler, 30% the page's own topic (title and link words), the rest Zipf vocabulary."""
    topic = np.array((title + " " + " ".join(links)).replace("(", "").replace(")", "").split())
    pick = rng.random(n)
    words = np.where(
        pick < 0.45,
        np.array(FILLER)[rng.integers(0, len(FILLER), n)],
        np.where(
            pick < 0.75, topic[rng.integers(0, len(topic), n)], vocab[rng.choice(len(vocab), n, p=vocab_p)]
        ),
    )
    return [w.lower() for w in words.tolist()]


def _pages(scale: float, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    n_en = max(50, round(PAGES_PER_SCALE * scale * 0.8))
    titles = _titles(rng, n_en)
    link_p = zipf_weights(n_en, 1.0)[rng.permutation(n_en)]
    vocab = np.array(NOUNS + ADJECTIVES + PLACES + LAST)
    vocab_p = zipf_weights(len(vocab), 1.0)[rng.permutation(len(vocab))]
    epoch = dt.datetime(2020, 1, 1)
    rows: dict[str, list] = {
        k: [] for k in ("page_id", "title", "url", "in_language", "date_modified", "wikidata_id", "wikitext")
    }

    def add(page_id: int, title: str, lang: str, qid: int, text: str) -> None:
        rows["page_id"].append(page_id)
        rows["title"].append(title)
        rows["url"].append(f"https://{lang}.wikipedia.org/wiki/{title.replace(' ', '_')}")
        rows["in_language"].append(lang)
        # Recently edited pages are more common: minutes before 2025-06-01, exponential.
        age = min(int(rng.exponential(200_000)), 2_800_000)
        rows["date_modified"].append(epoch + dt.timedelta(minutes=2_800_000 - age))
        rows["wikidata_id"].append(f"Q{qid}")
        rows["wikitext"].append(text)

    # Popular pages also have more language variants (~25% of pages are non-English).
    variants = np.minimum(rng.poisson(0.25 + 2.5 * link_p * n_en / 10), len(LANGS))
    page_id = 1
    for i, title in enumerate(titles):
        links = [titles[j] for j in rng.choice(n_en, 8, p=link_p)]
        words = _words(rng, title, links, vocab, vocab_p)
        add(page_id, title, "en", 1000 + i, _wikitext(rng, title, links, words))
        page_id += 1
        for lang in rng.choice(LANGS, variants[i], replace=False, p=zipf_weights(len(LANGS), 0.8)):
            add(page_id, title, str(lang), 1000 + i, _wikitext(rng, title, links, words[::-1]))
            page_id += 1
    return pa.table(rows)


_ANSWERS = """
CREATE SEQUENCE finewiki_answers_id_seq;
CREATE TABLE finewiki_answers (
  id BIGINT PRIMARY KEY DEFAULT nextval('finewiki_answers_id_seq'),
  question VARCHAR NOT NULL,
  wiki_summary VARCHAR,
  final_answer VARCHAR,
  created_at TIMESTAMP DEFAULT current_timestamp
);
"""


def generate(path: str | os.PathLike, scale: float = 1.0, seed: int = 11) -> Path:
    """Create the wiki database (scale 1 = 4,000 English pages plus variants). Idempotent."""

    def fill(con: duckdb.DuckDBPyConnection) -> None:
        con.register("src", _pages(scale, seed))
        con.execute(
            "CREATE TABLE pages (page_id BIGINT PRIMARY KEY, title VARCHAR NOT NULL, url VARCHAR, "
            "in_language VARCHAR NOT NULL, date_modified TIMESTAMP, wikidata_id VARCHAR, wikitext VARCHAR)"
        )
        con.execute("INSERT INTO pages SELECT * FROM src")
        con.unregister("src")
        con.execute(_ANSWERS)

    return build(path, {"generator": "wiki", "version": VERSION, "scale": scale, "seed": seed}, fill)


if __name__ == "__main__":
    args = sys.argv[1:]
    print(
        generate(
            args[0], *(float(args[1]),) if len(args) > 1 else (), *(int(args[2]),) if len(args) > 2 else ()
        )
    )
