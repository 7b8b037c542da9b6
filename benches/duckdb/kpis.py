#!/usr/bin/env python3
"""clickflow's three KPIs computed by DuckDB, in batch, over a JSON-lines events file.

The side-by-side peer of `versus_duckdb` (benches/src/bin/versus_duckdb.rs): the same
file, the same tables clickflow writes to PostgreSQL, computed by a batch engine.

    kpis.py EVENTS.jsonl OUT_DIR [--threads 2] [--window-s 60] [--gap-s 1800]

- event_trends: events per 1-minute window (aligned to the Unix epoch) and type, and the
  summed price of purchases in cents;
- funnel_summary: exact distinct users per window and type;
- session_features: per session id, its events ordered by time, split where two are more
  than the gap apart: views, cart adds, purchases, first and last event (Unix ms), the
  smallest user id, distinct products viewed, summed prices of cart adds in cents.

Prints one JSON line (seconds from reading the file to the three tables materialised, the
process's peak RSS, events read) and writes trends.csv, funnel.csv and sessions.csv into
OUT_DIR, sorted, for the comparison.
"""

import argparse
import json
import os
import resource
import time

import duckdb


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("events")
    parser.add_argument("out_dir")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window-s", type=int, default=60)
    parser.add_argument("--gap-s", type=int, default=1800)
    args = parser.parse_args()

    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    window_ms = args.window_s * 1000
    gap_ms = args.gap_s * 1000
    started = time.perf_counter()
    con.execute(
        """
        CREATE TABLE events AS
        SELECT user_id, session_id, product_id, event_type,
               epoch_ms(CAST(ts AS TIMESTAMPTZ)) AS ts,
               CAST(round(price * 100) AS BIGINT) AS cents
        FROM read_json(?, format = 'newline_delimited',
                       columns = {user_id: 'VARCHAR', session_id: 'VARCHAR',
                                  product_id: 'VARCHAR', event_type: 'VARCHAR',
                                  ts: 'VARCHAR', price: 'DOUBLE'})
        """,
        [args.events],
    )
    con.execute(
        f"""
        CREATE TABLE trends AS
        SELECT ts // {window_ms} * {window_ms} AS window_start, event_type, count(*) AS count,
               coalesce(sum(cents) FILTER (WHERE event_type = 'purchase'), 0) AS revenue_cents
        FROM events GROUP BY ALL
        """
    )
    con.execute(
        f"""
        CREATE TABLE funnel AS
        SELECT ts // {window_ms} * {window_ms} AS window_start, event_type,
               count(DISTINCT user_id) AS unique_users
        FROM events GROUP BY ALL
        """
    )
    con.execute(
        f"""
        CREATE TABLE sessions AS
        WITH stepped AS (
            SELECT *, ts - lag(ts) OVER (PARTITION BY session_id ORDER BY ts) AS step
            FROM events),
        numbered AS (
            SELECT *, sum(CASE WHEN step > {gap_ms} THEN 1 ELSE 0 END)
                          OVER (PARTITION BY session_id ORDER BY ts
                                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS part
            FROM stepped)
        SELECT session_id, min(ts) AS session_start, min(user_id) AS user_id,
               count(*) FILTER (WHERE event_type = 'click') AS num_views,
               count(*) FILTER (WHERE event_type = 'add_to_cart') AS num_cart_adds,
               count(*) FILTER (WHERE event_type = 'purchase') AS num_purchases,
               max(ts) AS last_event,
               count(DISTINCT product_id) FILTER (WHERE event_type = 'click') AS num_products,
               coalesce(sum(cents) FILTER (WHERE event_type = 'add_to_cart'), 0)
                   AS cart_value_cents
        FROM numbered GROUP BY session_id, part
        """
    )
    seconds = time.perf_counter() - started
    events = con.execute("SELECT count(*) FROM events").fetchone()[0]
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    os.makedirs(args.out_dir, exist_ok=True)
    for table, order in [
        ("trends", "window_start, event_type"),
        ("funnel", "window_start, event_type"),
        ("sessions", "session_id, session_start"),
    ]:
        path = os.path.join(args.out_dir, f"{table}.csv")
        con.execute(f"COPY (SELECT * FROM {table} ORDER BY {order}) TO '{path}' (HEADER false)")
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb, "events": events}))


if __name__ == "__main__":
    main()
