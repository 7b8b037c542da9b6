//! Change capture for the Kafka change topics, against the real server: what the triggers
//! write into the outbox, and which tables have them.

mod common;

use clickflow_sinks::changes::{capture_changes, ChangeTable};
use clickflow_sinks::postgres::{prepare, DatabaseUrl};
use clickflow_testkit::TestDatabase;
use common::block_on;

fn capture(url: &DatabaseUrl, tables: &[ChangeTable]) {
    block_on(async {
        let mut client = url.connect().await.unwrap();
        capture_changes(&mut client, tables).await.unwrap();
    });
}

fn triggered_tables(db: &TestDatabase) -> String {
    db.query(
        "SELECT string_agg(DISTINCT c.relname, ',' ORDER BY c.relname) FROM pg_trigger t
         JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname LIKE 'clickflow_capture_%'",
    )
}

const ALERT: &str = "INSERT INTO alerts (alert_id, kind, series, severity, observed, expected,
        opened_window, latest_window, status, raised_at, batch_time)
    VALUES ('purchases:1', 'drop', 'purchases', 'warning', 1, 40, now(), now(), 'open', now(), now())";

#[test]
fn each_committed_insert_update_and_delete_is_captured_with_its_key_before_and_after() {
    let db = TestDatabase::create("capture_ops");
    let url = DatabaseUrl::parse(&db.url).unwrap();
    block_on(prepare(&url)).unwrap();
    capture(&url, &[ChangeTable::Alerts, ChangeTable::EventTrends]);
    assert_eq!(triggered_tables(&db), "alerts,event_trends");

    db.query(ALERT);
    db.query("UPDATE alerts SET severity = 'critical' WHERE alert_id = 'purchases:1'");
    // The webhook's delivery mark is its bookkeeping, not a change of the alert.
    db.query("UPDATE alerts SET open_notified_at = now() WHERE alert_id = 'purchases:1'");
    // A transaction that rolls back leaves nothing in the outbox.
    assert!(db
        .try_query("BEGIN; UPDATE alerts SET status = 'x'; SELECT 1/0; COMMIT;")
        .is_err());
    db.query("DELETE FROM alerts WHERE alert_id = 'purchases:1'");
    // A table without the trigger is not captured.
    db.query(
        "INSERT INTO funnel_summary (window_start, window_end, event_type, unique_users, batch_time)
         VALUES (now(), now(), 'click', 3, now())",
    );

    // The sink's upsert: one statement inserting one key and updating another.
    let trend = |minute: u32, count: u32| {
        format!("('2025-07-08T00:0{minute}:00Z', '2025-07-08T00:0{minute}:59Z', 'click', {count}, 0, now())")
    };
    let upsert = |rows: &[String]| {
        format!(
            "INSERT INTO event_trends (window_start, window_end, event_type, count, revenue, batch_time)
             VALUES {} ON CONFLICT (window_start, event_type) DO UPDATE SET count = EXCLUDED.count",
            rows.join(", ")
        )
    };
    db.query(&upsert(&[trend(1, 5)]));
    db.query(&upsert(&[trend(1, 7), trend(2, 1)]));
    assert_eq!(
        db.query(
            "SELECT string_agg(concat_ws('|', op, key->>'window_start', before->>'count',
                        after->>'count'), ',' ORDER BY op, key->>'window_start')
             FROM clickflow_changes WHERE source_table = 'event_trends'"
        ),
        "c|2025-07-08T00:01:00+00:00|5,c|2025-07-08T00:02:00+00:00|1,\
         u|2025-07-08T00:01:00+00:00|5|7",
        "the upsert's insert and update, each captured (one statement's changes are of \
         different keys: their order among themselves does not matter)"
    );
    db.query("DELETE FROM clickflow_changes WHERE source_table = 'event_trends'");

    let changes = db.query(
        "SELECT string_agg(concat_ws('|', source_table, key::text, op,
                    before->>'severity', after->>'severity',
                    (after::jsonb ? 'open_notified_at')::text), E'\\n' ORDER BY seq)
         FROM clickflow_changes",
    );
    assert_eq!(
        changes,
        [
            r#"alerts|{"alert_id": "purchases:1"}|c|warning|false"#,
            r#"alerts|{"alert_id": "purchases:1"}|u|warning|critical|false"#,
            r#"alerts|{"alert_id": "purchases:1"}|d|critical"#,
        ]
        .join("\n")
    );
    // Each change's epoch is its transaction: three transactions, growing.
    let epochs = db.query(
        "SELECT count(DISTINCT epoch) = 3 AND bool_and(epoch > 0)
                AND array_agg(epoch ORDER BY seq) = array_agg(epoch ORDER BY epoch)
         FROM clickflow_changes",
    );
    assert_eq!(epochs, "t");
}

#[test]
fn capture_follows_the_tables_asked_for_and_a_run_without_a_feed_removes_it() {
    let db = TestDatabase::create("capture_tables");
    let url = DatabaseUrl::parse(&db.url).unwrap();
    block_on(prepare(&url)).unwrap();
    capture(&url, &ChangeTable::ALL);
    assert_eq!(
        triggered_tables(&db),
        "alerts,churn_scores,event_trends,funnel_conversion,funnel_summary,\
         product_recommendations,session_features,window_series"
    );
    capture(&url, &[ChangeTable::ChurnScores]);
    assert_eq!(triggered_tables(&db), "churn_scores");

    // The same tables again take no lock: a transaction holding the table (as a part a
    // crashed run left prepared does) does not hold the start back. (Were a trigger
    // created or dropped, the capture would wait for the lock until its lock_timeout and
    // fail.)
    let mut holder = std::process::Command::new("psql")
        .args([db.url.as_str(), "-Atqc"])
        .arg("BEGIN; LOCK TABLE churn_scores IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120);")
        .spawn()
        .unwrap();
    let held = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                WHERE c.relname = 'churn_scores' AND l.mode = 'AccessExclusiveLock' AND l.granted";
    while db.query(held) != "1" {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    capture(&url, &[ChangeTable::ChurnScores]);
    db.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE query LIKE '%pg_sleep(120)%' AND pid <> pg_backend_pid()",
    );
    let _ = holder.wait();

    capture(&url, &[]);
    assert_eq!(triggered_tables(&db), "");
    db.query(ALERT);
    assert_eq!(db.query("SELECT count(*) FROM clickflow_changes"), "0");
}

/// The publisher: changes committed before it started are published and counted as
/// republished, later ones are not; every published change leaves the outbox, a delete is
/// followed by its tombstone, and `clickflow_publisher` records the last one.
#[test]
fn the_publisher_empties_the_outbox_and_counts_what_an_earlier_run_left() {
    use clickflow_sinks::changes::{spawn_publisher, FeedConfig};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    use std::sync::atomic::Ordering;

    let db = TestDatabase::create("capture_publisher");
    let url = DatabaseUrl::parse(&db.url).unwrap();
    block_on(prepare(&url)).unwrap();
    capture(&url, &[ChangeTable::Alerts]);
    let broker = clickflow_sources::kafka::EmbeddedBroker::start().unwrap();
    broker.create_topic("clickflow.alerts", 1).unwrap();
    let feed = FeedConfig {
        brokers: broker.bootstrap_servers().to_string(),
        tables: vec![ChangeTable::Alerts],
        topic_prefix: "clickflow.".into(),
        partitions: 1,
        replication: 1,
    };
    let waiting = || db.query("SELECT count(*) FROM clickflow_changes");
    let drained = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while waiting() != "0" {
            assert!(
                std::time::Instant::now() < deadline,
                "the outbox was not emptied"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };

    // An earlier run committed three changes and died before publishing them.
    db.query(ALERT);
    db.query("UPDATE alerts SET severity = 'critical'");
    db.query("DELETE FROM alerts");
    assert_eq!(waiting(), "3");
    let publisher = spawn_publisher(url.clone(), feed.clone()).unwrap();
    drained();
    db.query(ALERT);
    drained();
    let stats = publisher.stats.clone();
    publisher.stop();
    assert_eq!(stats.published.load(Ordering::Relaxed), 4);
    assert_eq!(stats.republished.load(Ordering::Relaxed), 3);
    assert_eq!(stats.lag.lock().unwrap().total(), 4);
    assert_eq!(
        db.query("SELECT published = 4 AND last_seq = (SELECT last_value FROM clickflow_changes_seq_seq) FROM clickflow_publisher"),
        "t"
    );

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "capture-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["clickflow.alerts"]).unwrap();
    let mut ops = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while ops.len() < 5 && std::time::Instant::now() < deadline {
        if let Some(message) = consumer.poll(std::time::Duration::from_millis(200)) {
            let message = message.unwrap();
            ops.push(match message.payload() {
                None => "tombstone".to_string(),
                Some(value) => {
                    let change: serde_json::Value = serde_json::from_slice(value).unwrap();
                    change["op"].as_str().unwrap().to_string()
                }
            });
        }
    }
    assert_eq!(ops, ["c", "u", "d", "tombstone", "c"]);
}
