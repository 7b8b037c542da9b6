//! `clickflow tail`: prints a change topic, one JSON line per message, for people checking
//! the feed by hand (and scripts that want a line per change).

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use clickflow_sources::kafka::{client_config, partition_count};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use super::args::duration;
use super::signals::stop_flag;

/// Flags of `clickflow tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// The topic, e.g. `clickflow.alerts`.
    #[arg(long, default_value = "clickflow.alerts")]
    topic: String,
    /// Start from the oldest message kept (default: only messages from now on).
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many messages.
    #[arg(long)]
    max: Option<u64>,
    /// Stop once no message came for this long (default: follow until Ctrl-C).
    #[arg(long, value_parser = duration)]
    idle_exit: Option<Duration>,
}

/// Runs `clickflow tail`: each message as `{"partition", "offset", "key", "headers",
/// "value"}`, key and value as JSON when they are (a tombstone's value is `null`).
pub fn tail(args: TailArgs) -> anyhow::Result<()> {
    let partitions = partition_count(&args.brokers, &args.topic, Duration::from_secs(10))?;
    let consumer: BaseConsumer = client_config(&args.brokers)
        .set("group.id", "clickflow-tail")
        .set("enable.auto.commit", "false")
        .create()?;
    let start = if args.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(&args.topic, partition, start)?;
    }
    consumer.assign(&assignment)?;
    eprintln!(
        "tailing {} ({partitions} partitions) on {}",
        args.topic, args.brokers
    );
    let stop = stop_flag()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (mut printed, mut last_message) = (0u64, Instant::now());
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if args.max.is_some_and(|max| printed >= max)
            || args
                .idle_exit
                .is_some_and(|idle| last_message.elapsed() >= idle)
        {
            break;
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        let headers: serde_json::Map<String, Value> = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_string(), as_json(h.value)))
                    .collect()
            })
            .unwrap_or_default();
        let line = json!({
            "partition": message.partition(),
            "offset": message.offset(),
            "key": as_json(message.key()),
            "headers": headers,
            "value": as_json(message.payload()),
        });
        if writeln!(out, "{line}").is_err() {
            break; // the reader went away (`| head`)
        }
        let _ = out.flush();
        printed += 1;
        last_message = Instant::now();
    }
    eprintln!("{printed} messages");
    Ok(())
}

/// Bytes as JSON: parsed when they are JSON, else as a string (lossy UTF-8); none as `null`.
fn as_json(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(bytes) => serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_json_when_they_are_and_text_otherwise() {
        assert_eq!(
            as_json(Some(br#"{"alert_id":"a"}"#)),
            json!({"alert_id": "a"})
        );
        assert_eq!(as_json(Some(b"48213")), json!(48213));
        assert_eq!(as_json(Some(b"not json")), json!("not json"));
        assert_eq!(as_json(None), Value::Null);
    }
}
