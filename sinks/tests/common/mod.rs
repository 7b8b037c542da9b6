//! Helpers shared by the sink's integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clickflow_dataflow::rows::{FunnelRow, SessionRow, TrendRow};
use clickflow_dataflow::run::{InputSpec, RunConfig, RunStats};
use clickflow_dataflow::window::Window;
use clickflow_dataflow::{DataflowConfig, EpochConfig, Tables};
use clickflow_sinks::postgres::{run_into_postgres, DatabaseUrl, PipelineError, SinkConfig};
use clickflow_sources::file::FileSplits;
use clickflow_sources::shop::{Shop, ShopConfig};
use clickflow_sources::{DeadLetter, EventType, PartitionId, RejectKind, Rejection};

/// A shop file of `count` records with late and malformed ones.
pub fn shop_file(path: &Path, seed: u64, count: usize) {
    let shop = Shop::new(ShopConfig {
        seed,
        users: 500,
        events_per_second: 50.0,
        concurrent_sessions: 100,
        late_fraction: 0.03,
        max_lateness_ms: 90_000,
        malformed_fraction: 0.01,
        ..ShopConfig::default()
    });
    let mut out = Vec::new();
    for record in shop.bounded(count) {
        record.write_payload(&mut out);
        out.push(b'\n');
    }
    std::fs::File::create(path)
        .unwrap()
        .write_all(&out)
        .unwrap();
}

/// Short epochs, so that a small input spans many transactions.
pub fn short_epochs() -> EpochConfig {
    EpochConfig {
        epoch: Duration::from_millis(5),
        poll_batch: 64,
        ..EpochConfig::default()
    }
}

/// Runs a file into the database at `url`.
pub fn run_file(
    splits: &FileSplits,
    workers: usize,
    url: &str,
    epochs: EpochConfig,
) -> Result<RunStats, PipelineError> {
    let config = RunConfig {
        dataflow: DataflowConfig::default(),
        epochs,
        ..RunConfig::default()
    };
    let mut sink = SinkConfig::new(DatabaseUrl::parse(url).unwrap());
    sink.checkpoint_interval = Duration::from_millis(20);
    run_into_postgres(
        timely::Config::process(workers),
        InputSpec::File(splits.clone()),
        config,
        sink,
        true,
        Arc::new(AtomicBool::new(false)),
        |_| {},
    )
}

fn kind_of(reason: &str) -> RejectKind {
    RejectKind::ALL
        .into_iter()
        .find(|k| reason.starts_with(k.as_str()))
        .expect("a known reason")
}

/// Everything the tables hold, read back from PostgreSQL.
pub fn read_tables(url: &str) -> Tables {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let ms = |column: &str| format!("(extract(epoch FROM {column}) * 1000)::bigint");
        let mut tables = Tables::default();
        let sql = format!(
            "SELECT {}, {}, event_type, count, (revenue * 100)::bigint FROM event_trends",
            ms("window_start"),
            ms("window_end")
        );
        for row in client.query(&sql, &[]).await.unwrap() {
            let window = Window { start: row.get(0), end: row.get(1) };
            let event_type = EventType::from_wire(row.get(2)).unwrap();
            let trend = TrendRow { window, event_type, count: row.get(3), revenue_cents: row.get(4) };
            tables.trends.insert((window, event_type), trend);
        }
        let sql = format!("SELECT {}, {}, event_type, unique_users FROM funnel_summary", ms("window_start"), ms("window_end"));
        for row in client.query(&sql, &[]).await.unwrap() {
            let window = Window { start: row.get(0), end: row.get(1) };
            let event_type = EventType::from_wire(row.get(2)).unwrap();
            tables.funnel.insert((window, event_type), FunnelRow { window, event_type, unique_users: row.get(3) });
        }
        let sql = format!(
            "SELECT session_id, user_id, num_views, num_cart_adds, num_purchases, {}, {}, closed, duration_s FROM session_features",
            ms("session_start"),
            ms("last_event")
        );
        for row in client.query(&sql, &[]).await.unwrap() {
            let session = SessionRow {
                session_id: row.get::<_, &str>(0).into(),
                user_id: row.get::<_, &str>(1).into(),
                num_views: row.get(2),
                num_cart_adds: row.get(3),
                num_purchases: row.get(4),
                session_start: row.get(5),
                last_event: row.get(6),
                closed: row.get(7),
            };
            assert_eq!(row.get::<_, f64>(8), session.duration_s());
            tables.sessions.insert(session.session_id.clone(), session);
        }
        let sql = "SELECT topic, partition, \"offset\", reason, payload FROM dead_letters ORDER BY id";
        for row in client.query(sql, &[]).await.unwrap() {
            let reason: String = row.get(3);
            let rejection = Rejection::new(kind_of(&reason), reason.clone());
            let partition = PartitionId::new(row.get::<_, &str>(0), row.get(1));
            let payload: String = row.get(4);
            tables.dead_letters.push(DeadLetter::new(partition, row.get(2), rejection, payload.as_bytes()));
        }
        for row in client.query("SELECT topic, partition, next_offset FROM clickflow_offsets", &[]).await.unwrap() {
            tables.offsets.insert(PartitionId::new(row.get::<_, &str>(0), row.get(1)), row.get(2));
        }
        tables
    })
}
