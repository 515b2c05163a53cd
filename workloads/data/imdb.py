"""IMDb-like data (the schema of the IMDb non-commercial TSV datasets) into a DuckDB file.

Tables: title_basics, title_ratings, title_akas, title_crew, title_principals, title_episode,
name_basics; the columns the Halo IMDb templates query. Popularity is Zipf-like: title votes,
the people cast and the words in titles all follow power laws (see README.md).

    python -m workloads.data.imdb PATH [SCALE [SEED]]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from ._build import build, zipf_weights

VERSION = 1
TITLES_PER_SCALE = 20_000
NAMES_PER_SCALE = 15_000

ADJECTIVES = (
    "Dark Last Lost Silent Golden Broken Secret Wild Little Red Blue Black White Hidden Final Eternal "
    "Cold Burning Forgotten Sweet Crimson Quiet Brave Lonely Deadly Perfect Strange Savage Electric Midnight "
    "Frozen Iron Stolen Wicked Holy Empty Fallen Young Endless Bitter Distant Shining Hollow Royal Sacred"
).split()
NOUNS = (
    "Love Night City Man Girl World Heart Dream House Road War Life Story Game King Star Day Fire Shadow "
    "River Moon Sun Storm Island Ghost Blood Kingdom Family Time Sea Summer Winter Devil Angel Queen "
    "Soldier Mountain Garden Journey Legacy Empire Hunter Stranger Promise Secret Mirror Letter Voice "
    "Train Wolf Dragon Horizon Memory Paradise Revenge Escape Prophecy Bridge Witness Country Machine"
).split()
FIRST_M = (
    "James John Robert Michael William David Richard Joseph Thomas Charles Daniel Matthew Anthony Mark "
    "Paul Steven Andrew Kenji Luca Pierre Hans Carlos Raj Ivan Ahmed Chen Mateo Lars Tomas Omar"
).split()
FIRST_F = (
    "Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Nancy Emma Olivia Sophia "
    "Isabella Mia Yuki Giulia Claire Anna Maria Priya Olga Fatima Mei Sofia Ingrid Elena Aiko Leila"
).split()
LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Wilson "
    "Anderson Thomas Taylor Moore Jackson Martin Lee Thompson White Harris Clark Lewis Walker Hall Young "
    "King Wright Scott Green Baker Adams Nelson Hill Campbell Mitchell Roberts Carter Tanaka Rossi Dubois "
    "Schmidt Kumar Ivanov Hassan Wang Silva Larsen Novak Kim Sato Ferrari Moreau Muller Singh Petrov"
).split()
GENRES = (
    "Drama Comedy Documentary Action Romance Thriller Crime Horror Adventure Family Animation Mystery "
    "Fantasy Biography Sci-Fi History Music War Sport Musical Western Short Reality-TV Talk-Show News"
).split()
TYPES = ["movie", "short", "tvSeries", "tvMovie", "video", "tvMiniSeries"]
TYPE_P = [0.55, 0.13, 0.12, 0.08, 0.07, 0.05]
REGIONS = ["US", "GB", "DE", "FR", "IN", "JP", "ES", "IT", "BR", "CA", "AU", "MX", "RU", "KR", "SE"]
REGION_LANG = {
    "DE": "de",
    "FR": "fr",
    "IN": "hi",
    "JP": "ja",
    "ES": "es",
    "IT": "it",
    "BR": "pt",
    "MX": "es",
    "RU": "ru",
    "KR": "ko",
    "SE": "sv",
}
ARTICLE = {"de": "Der", "fr": "Le", "es": "El", "it": "Il", "pt": "O", "sv": "Den"}
EXTRA_ROLES = ["director", "writer", "producer", "composer", "cinematographer", "editor"]
WRITER_JOBS = ["screenplay", "story", "novel", "written by", None, None]


def _title(rng: np.random.Generator, adj_p: np.ndarray, noun_p: np.ndarray) -> str:
    adj = ADJECTIVES[rng.choice(len(ADJECTIVES), p=adj_p)]
    noun, noun2 = (NOUNS[i] for i in rng.choice(len(NOUNS), 2, p=noun_p))
    pattern = rng.integers(8)
    if pattern < 3:
        return f"The {adj} {noun}"
    if pattern < 5:
        return f"{adj} {noun}"
    if pattern == 5:
        return f"{noun} of the {noun2}"
    if pattern == 6:
        return f"The {noun}"
    return f"{noun} {rng.integers(2, 5)}" if rng.random() < 0.3 else f"{adj} {noun}s"


def _tables(scale: float, seed: int) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    n_works = max(50, round(TITLES_PER_SCALE * scale * 0.75))
    n_people = max(50, round(NAMES_PER_SCALE * scale))
    adj_p, noun_p = zipf_weights(len(ADJECTIVES), 0.8), zipf_weights(len(NOUNS), 0.8)

    # Works (everything but episodes).
    types = rng.choice(TYPES, n_works, p=TYPE_P)
    years = np.clip(2024 - rng.exponential(20, n_works).astype(int), 1915, 2024)
    titles = [_title(rng, adj_p, noun_p) for _ in range(n_works)]
    genre_p = zipf_weights(len(GENRES), 0.9)
    genres = [
        ",".join(sorted(set(rng.choice(GENRES, rng.integers(1, 4), p=genre_p)))) for _ in range(n_works)
    ]
    runtime = np.where(types == "short", rng.normal(14, 6, n_works), rng.normal(98, 22, n_works))
    runtime = np.where(np.isin(types, ["tvSeries", "tvMiniSeries"]), rng.normal(45, 12, n_works), runtime)

    # Episodes hang off series, popular series have many.
    series = np.flatnonzero(np.isin(types, ["tvSeries", "tvMiniSeries"]))
    n_eps = round(TITLES_PER_SCALE * scale * 0.25) if len(series) else 0
    parent = series[rng.choice(len(series), n_eps, p=zipf_weights(len(series), 1.0))] if n_eps else series
    season = rng.integers(1, 9, n_eps)
    episode = rng.integers(1, 25, n_eps)
    n_titles = n_works + n_eps
    tconst = np.array([f"tt{i:07d}" for i in range(1, n_titles + 1)])
    all_types = np.concatenate([types, np.full(n_eps, "tvEpisode")])
    primary = titles + [
        f"Episode #{s}.{e}" if rng.random() < 0.6 else _title(rng, adj_p, noun_p)
        for s, e in zip(season, episode, strict=True)
    ]
    ep_years = years[parent] + (season - 1)
    original = list(primary)
    for i in np.flatnonzero(rng.random(n_works) < 0.12):
        original[i] = f"{rng.choice(list(ARTICLE.values()))} {primary[i].removeprefix('The ')}"
    end_year = np.where(
        np.isin(types, ["tvSeries", "tvMiniSeries"]) & (rng.random(n_works) < 0.6),
        np.minimum(years + rng.geometric(0.25, n_works), 2024),
        -1,
    )
    basics = pa.table(
        {
            "tconst": tconst,
            "title_type": all_types,
            "primary_title": primary,
            "original_title": original,
            "is_adult": np.zeros(n_titles, dtype=bool),
            "start_year": pa.array(np.concatenate([years, np.minimum(ep_years, 2024)]).astype("int32")),
            "end_year": pa.array(
                np.concatenate([end_year, np.full(n_eps, -1)]).astype("int32"),
                mask=np.concatenate([end_year < 0, np.ones(n_eps, dtype=bool)]),
            ),
            "runtime_minutes": pa.array(
                np.concatenate([np.maximum(runtime, 3), rng.normal(35, 12, n_eps).clip(5)]).astype("int32"),
                mask=rng.random(n_titles) < 0.08,
            ),
            "genres": pa.array(genres + [genres[p] for p in parent], mask=rng.random(n_titles) < 0.03),
        }
    )

    # Ratings: votes follow a power law over a random popularity ranking; ~80% of titles rated.
    rank = rng.permutation(n_titles) + 1
    votes = np.maximum(5, (1_500_000 * rank**-1.1 * rng.lognormal(0, 0.4, n_titles))).astype("int64")
    rated = (rng.random(n_titles) < 0.8) | (rank <= n_titles // 100)
    rating = np.clip(rng.normal(6.1, 1.2, n_titles) + 0.15 * np.log10(votes), 1, 10).round(1)
    ratings = pa.table({"tconst": tconst[rated], "average_rating": rating[rated], "num_votes": votes[rated]})

    # Principals: cast then crew per title, people drawn by Zipf popularity.
    person_p = zipf_weights(n_people, 0.6)[rng.permutation(n_people)]
    k = np.where(all_types == "tvEpisode", 2 + rng.poisson(2, n_titles), 4 + rng.poisson(3, n_titles)).clip(
        2, 10
    )
    people = rng.choice(n_people, int(k.sum()), p=person_p)
    owner = np.repeat(np.arange(n_titles), k)
    ordering = np.arange(len(owner)) - np.repeat(np.cumsum(k) - k, k) + 1
    n_cast = np.maximum(1, k - 3)[owner]
    female = people % 2 == 1
    crew_slot = np.minimum(ordering - n_cast - 1, len(EXTRA_ROLES) - 1)
    category = np.where(
        ordering <= n_cast,
        np.where(female, "actress", "actor"),
        np.array(EXTRA_ROLES)[np.maximum(crew_slot, 0)],
    )
    first = np.where(
        female,
        np.array(FIRST_F)[rng.integers(0, len(FIRST_F), len(owner))],
        np.array(FIRST_M)[rng.integers(0, len(FIRST_M), len(owner))],
    )
    job = [
        WRITER_JOBS[rng.integers(len(WRITER_JOBS))]
        if c == "writer"
        else ("producer" if c == "producer" else None)
        for c in category
    ]
    nconst = np.array([f"nm{j:07d}" for j in range(1, n_people + 1)])
    principals = pa.table(
        {
            "tconst": tconst[owner],
            "ordering": ordering.astype("int32"),
            "nconst": nconst[people],
            "category": category,
            "job": job,
            "characters": pa.array(
                [f'["{f}"]' for f in first], mask=~np.isin(category, ["actor", "actress"])
            ),
        }
    )

    names_first = np.where(
        np.arange(n_people) % 2 == 1,
        np.array(FIRST_F)[rng.integers(0, len(FIRST_F), n_people)],
        np.array(FIRST_M)[rng.integers(0, len(FIRST_M), n_people)],
    )
    last = np.array(LAST)[rng.choice(len(LAST), n_people, p=zipf_weights(len(LAST), 0.8))]
    birth = rng.integers(1900, 2006, n_people)
    dead = (birth < 1960) & (rng.random(n_people) < (1960 - birth) / 60)
    names = pa.table(
        {
            "nconst": nconst,
            "primary_name": np.char.add(np.char.add(names_first.astype(str), " "), last.astype(str)),
            "birth_year": pa.array(birth.astype("int32"), mask=rng.random(n_people) < 0.35),
            "death_year": pa.array(
                np.minimum(birth + rng.integers(45, 96, n_people), 2024).astype("int32"), mask=~dead
            ),
        }
    )

    akas_n = np.where(
        all_types == "tvEpisode",
        0,
        1 + np.minimum(rng.poisson(1.0, n_titles) + (rank <= n_titles // 20) * 3, 7),
    )
    a_owner = np.repeat(np.arange(n_titles), akas_n)
    a_order = np.arange(len(a_owner)) - np.repeat(np.cumsum(akas_n) - akas_n, akas_n) + 1
    region = np.array(REGIONS)[rng.choice(len(REGIONS), len(a_owner), p=zipf_weights(len(REGIONS), 0.7))]
    lang = [REGION_LANG.get(r) for r in region]
    localized = rng.random(len(a_owner)) < 0.4
    aka_title = [
        original[o]
        if n == 1
        else (f"{ARTICLE[g]} {primary[o].removeprefix('The ')}" if loc and g in ARTICLE else primary[o])
        for o, n, g, loc in zip(a_owner, a_order, lang, localized, strict=True)
    ]
    is_orig = a_order == 1
    akas = pa.table(
        {
            "title_id": tconst[a_owner],
            "ordering": a_order.astype("int32"),
            "title": aka_title,
            "region": pa.array(region, mask=is_orig),
            "language": pa.array([None if o else g for g, o in zip(lang, is_orig, strict=True)], pa.string()),
            "types": pa.array(np.where(is_orig, "original", "imdbDisplay")),
            "is_original_title": is_orig,
        }
    )
    episodes = pa.table(
        {
            "tconst": tconst[n_works:],
            "parent_tconst": tconst[parent],
            "season_number": season.astype("int32"),
            "episode_number": episode.astype("int32"),
        }
    )
    return {
        "title_basics": basics,
        "title_ratings": ratings,
        "title_principals": principals,
        "name_basics_base": names,
        "title_akas": akas,
        "title_episode": episodes,
    }


_DERIVED = """
CREATE TABLE title_crew AS
SELECT b.tconst,
       string_agg(p.nconst, ',' ORDER BY p.ordering) FILTER (WHERE p.category = 'director') AS directors,
       string_agg(p.nconst, ',' ORDER BY p.ordering) FILTER (WHERE p.category = 'writer') AS writers
FROM title_basics b LEFT JOIN title_principals p ON p.tconst = b.tconst
GROUP BY b.tconst ORDER BY b.tconst;
CREATE TABLE name_basics AS
WITH credits AS (
  SELECT p.nconst, p.category, p.tconst, coalesce(r.num_votes, 0) AS votes
  FROM title_principals p LEFT JOIN title_ratings r ON r.tconst = p.tconst
), prof AS (
  SELECT nconst, string_agg(category, ',' ORDER BY n DESC, category) FILTER (WHERE rk <= 3) AS profession
  FROM (SELECT nconst, category, count(*) AS n,
               row_number() OVER (PARTITION BY nconst ORDER BY count(*) DESC, category) AS rk
        FROM credits GROUP BY nconst, category)
  GROUP BY nconst
), known AS (
  SELECT nconst, string_agg(tconst, ',' ORDER BY votes DESC, tconst) FILTER (WHERE rk <= 4) AS titles
  FROM (SELECT DISTINCT ON (nconst, tconst) nconst, tconst, votes,
               dense_rank() OVER (PARTITION BY nconst ORDER BY votes DESC, tconst) AS rk
        FROM credits)
  GROUP BY nconst
)
SELECT n.nconst, n.primary_name, n.birth_year, n.death_year,
       prof.profession AS primary_profession, known.titles AS known_for_titles
FROM name_basics_base n LEFT JOIN prof USING (nconst) LEFT JOIN known USING (nconst)
ORDER BY n.nconst;
DROP TABLE name_basics_base;
"""


def generate(path: str | os.PathLike, scale: float = 1.0, seed: int = 7) -> Path:
    """Create the IMDb-like database (scale 1 = 20,000 titles, 15,000 people). Idempotent."""

    def fill(con: duckdb.DuckDBPyConnection) -> None:
        for name, table in _tables(scale, seed).items():
            con.register("src", table)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM src")
            con.unregister("src")
        con.execute(_DERIVED)

    return build(path, {"generator": "imdb", "version": VERSION, "scale": scale, "seed": seed}, fill)


if __name__ == "__main__":
    args = sys.argv[1:]
    print(
        generate(
            args[0], *(float(args[1]),) if len(args) > 1 else (), *(int(args[2]),) if len(args) > 2 else ()
        )
    )
