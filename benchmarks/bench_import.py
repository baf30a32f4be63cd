"""CSV import benchmark: seconds to import N subscribers (default 50,000) into a fresh database.

    .venv/bin/python benchmarks/bench_import.py [--rows 50000] [--database URL] [--runs 3]

Writes a CSV of N distinct readers with mixed preferences (topics, keywords, authors, frequency, send
time, time zone), imports it with ``digest.subscribers.import_csv`` (what ``digest subscribers
import`` runs) into a new SQLite file (or the given database, which must be empty), and then imports it
again (every row an update). Prints key=value lines: import_rows, import_s (best run), import_s_runs,
reimport_s, rows_per_s.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from digest.config import Settings, settings_from_dict  # noqa: E402
from digest.store import Store  # noqa: E402
from digest.subscribers import CSV_FIELDS, import_csv  # noqa: E402

TOPICS = ["pruning", "diffusion", "subspace", "nas"]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Europe/London"]


def write_csv(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        fh.write(",".join(CSV_FIELDS) + "\n")
        for i in range(rows):
            topics = ";".join(rng.sample(TOPICS, rng.randint(0, 3)))
            keywords = ";".join(rng.sample(["low-rank", "sparsity", "quantization", "LoRA", "distillation"],
                                           rng.randint(0, 2)))
            authors = "Song Han" if rng.random() < 0.2 else ""
            fh.write(f"reader{i}@example{i % 97}.org,Reader {i},{topics},{keywords},,{authors},"
                     f"{rng.choice(['daily', 'weekly'])},{rng.randint(5, 9):02d}:{rng.choice([0, 30]):02d},"
                     f"{rng.choice(ZONES)},{rng.randint(5, 25)}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3, help="fresh-database imports; the best is reported")
    parser.add_argument("--database", default="", help="an empty database URL (default: a new SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "people.csv"
        write_csv(csv_path, args.rows)
        times, reimport = [], 0.0
        for run in range(args.runs):
            url = args.database or f"sqlite:///{tmp}/run{run}.sqlite3"
            settings: Settings = settings_from_dict({"database": {"url": url}}, origin="bench")
            store = Store(url)
            if sum(store.count_subscribers().values()):
                sys.exit("error: --database must be empty")
            start = time.perf_counter()
            result = import_csv(settings, store, csv_path)
            times.append(time.perf_counter() - start)
            assert result.added == args.rows and not result.invalid, result
            if run == 0:
                start = time.perf_counter()
                import_csv(settings, store, csv_path)
                reimport = time.perf_counter() - start
            if args.database:
                with store.engine.begin() as conn:
                    conn.exec_driver_sql("DELETE FROM subscribers")
            store.close()
    best = min(times)
    print(f"import_rows={args.rows}")
    print(f"import_s={best:.2f}")
    print(f"import_s_runs={','.join(f'{t:.2f}' for t in times)}")
    print(f"reimport_s={reimport:.2f}")
    print(f"rows_per_s={args.rows / best:.0f}")


if __name__ == "__main__":
    main()
