//! `clickflow produce`: the synthetic shop into Kafka or a JSON-lines file.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use clickflow_sources::kafka::{EmbeddedBroker, EventProducer};
use clickflow_sources::shop::{EventMix, Incident, Shop, ShopConfig, ShopRecord};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::signals::stop_flag;

/// Flags of `clickflow produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Kafka bootstrap servers; without it (and without --output) events go to an embedded
    /// broker that lives only as long as this command: useful to measure, not to keep.
    #[arg(long)]
    brokers: Option<String>,
    /// Kafka topic.
    #[arg(long, default_value = "user-events")]
    topic: String,
    /// Partitions of the embedded broker's topic (it keeps ~100k messages per partition).
    #[arg(long, default_value_t = 16)]
    partitions: i32,
    /// Write JSON lines to this file instead of Kafka (`-` for standard output).
    #[arg(long, short = 'o', conflicts_with = "brokers")]
    output: Option<PathBuf>,
    /// Events to produce; without it, produce until interrupted.
    #[arg(long)]
    count: Option<u64>,
    /// Events per second (0: as fast as possible).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seed of every random choice: the same seed and --start give the same bytes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Shoppers in the pool (the default: a shopper returns after days, as in a real shop).
    #[arg(long, default_value_t = ShopConfig::default().users)]
    users: u32,
    /// Distinct products (popularity is Zipf-like).
    #[arg(long, default_value_t = 1_000)]
    products: u32,
    /// How strongly traffic follows the hour of day (UTC), 0 to 0.95: 0 is a flat rate, 0.5
    /// has three times as many visits at 20:00 as at 08:00.
    #[arg(long, default_value_t = ShopConfig::default().daily_rhythm)]
    daily_rhythm: f64,
    /// Event time (RFC 3339) from which visits behave differently: buyers' patterns change
    /// (see the README), as a churn model's drift test needs.
    #[arg(long)]
    drift_at: Option<String>,
    /// Instead of realistic visits, draw each event's type from fixed shares of click,
    /// add_to_cart and purchase, e.g. `0.7,0.2,0.1` (benchmark files of a given shape).
    #[arg(long, value_delimiter = ',', num_args = 3)]
    mix: Option<Vec<f64>>,
    /// With --mix: mean events of a visit.
    #[arg(long, default_value_t = 40.0, requires = "mix")]
    events_per_visit: f64,
    /// With --mix: mean time between two events of a visit.
    #[arg(long, default_value = "7500ms", value_parser = |s: &str| humantime::parse_duration(s).map_err(|e| e.to_string()), requires = "mix")]
    dwell: Duration,
    /// Event time of the first event (RFC 3339). Default: now, or with --rate 0 and --count,
    /// early enough that the generated history ends now.
    #[arg(long)]
    start: Option<String>,
    /// Events per second of event time when --rate is 0.
    #[arg(long, default_value_t = 1000.0)]
    traffic: f64,
    /// Share of events delivered out of order.
    #[arg(long, default_value_t = 0.0)]
    late_fraction: f64,
    /// How far (event time) an out-of-order event may trail, e.g. `90s`.
    #[arg(long, default_value = "60s", value_parser = |s: &str| humantime::parse_duration(s).map_err(|e| e.to_string()))]
    max_lateness: Duration,
    /// Share of payloads that are malformed (one of each rejection kind in turn).
    #[arg(long, default_value_t = 0.0)]
    malformed_fraction: f64,
    /// Stage an incident, `KIND@AFTER/LASTING` after the first event (repeatable): kinds
    /// spike (3x visits), drop (1/3 of visits), checkout-outage (no purchases),
    /// cart-bug (9 in 10 cart adds fail), malformed-storm (3 in 10 payloads broken).
    #[arg(long = "incident")]
    incidents: Vec<Incident>,
}

impl ProduceArgs {
    fn shop(&self) -> anyhow::Result<ShopConfig> {
        let events_per_second = if self.rate > 0.0 {
            self.rate
        } else {
            self.traffic
        };
        let start_ms = match &self.start {
            Some(text) => rfc3339_ms(text).context("--start")?,
            None => {
                let now = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
                match self.count {
                    Some(count) if self.rate <= 0.0 => {
                        now - (count as f64 / events_per_second * 1000.0) as i64
                    }
                    _ => now,
                }
            }
        };
        anyhow::ensure!(
            (0.0..0.96).contains(&self.daily_rhythm),
            "--daily-rhythm must be within 0..0.95"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.late_fraction),
            "--late-fraction must be within 0..1"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.malformed_fraction),
            "--malformed-fraction must be within 0..1"
        );
        Ok(ShopConfig {
            seed: self.seed,
            users: self.users,
            products: self.products,
            start_ms,
            events_per_second,
            daily_rhythm: self.daily_rhythm,
            late_fraction: self.late_fraction,
            max_lateness_ms: self.max_lateness.as_millis() as i64,
            malformed_fraction: self.malformed_fraction,
            drift_at_ms: self.drift_at.as_deref().map(rfc3339_ms).transpose()?,
            incidents: self.incidents.clone(),
            mix: match &self.mix {
                Some(shares) => {
                    anyhow::ensure!(
                        shares.len() == 3
                            && shares.iter().all(|s| *s >= 0.0)
                            && shares.iter().sum::<f64>() > 0.0,
                        "--mix takes three shares >= 0, of click, add_to_cart and purchase"
                    );
                    Some(EventMix {
                        shares: [shares[0], shares[1], shares[2]],
                        events_per_visit: self.events_per_visit.max(1.0),
                        dwell_s: self.dwell.as_secs_f64(),
                    })
                }
                None => None,
            },
        })
    }
}

/// Unix milliseconds of an RFC 3339 time.
pub(super) fn rfc3339_ms(text: &str) -> anyhow::Result<i64> {
    let at = OffsetDateTime::parse(text, &Rfc3339)
        .with_context(|| format!("{text:?} is not an RFC 3339 time"))?;
    Ok((at.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Where records go.
enum Destination {
    Kafka(EventProducer),
    Lines(Box<dyn Write>),
}

impl Destination {
    fn send(&mut self, record: &ShopRecord, buffer: &mut Vec<u8>) -> anyhow::Result<()> {
        buffer.clear();
        record.write_payload(buffer);
        match self {
            Destination::Kafka(producer) => producer.send(record.key().as_bytes(), buffer)?,
            Destination::Lines(out) => {
                buffer.push(b'\n');
                out.write_all(buffer)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<Option<u64>> {
        match self {
            Destination::Kafka(mut producer) => {
                let stats = producer.flush(Duration::from_secs(60))?;
                anyhow::ensure!(
                    stats.failed == 0,
                    "{} messages were not delivered",
                    stats.failed
                );
                Ok(Some(stats.delivered))
            }
            Destination::Lines(mut out) => {
                out.flush()?;
                Ok(None)
            }
        }
    }
}

/// Runs `clickflow produce`.
pub fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let shop = Shop::new(args.shop()?);
    let stop = stop_flag()?;
    let mut embedded = None;
    // Unpaced (`--rate 0`) is a bulk load: batches may wait longer to fill. Paced traffic
    // into the embedded broker fills batches longer than into a real one, as the demo does
    // (see `EventProducer::live_into_embedded`).
    let producer = |brokers: &str, embedded: bool| {
        if args.rate <= 0.0 {
            EventProducer::bulk(brokers, &args.topic)
        } else if embedded {
            EventProducer::live_into_embedded(brokers, &args.topic)
        } else {
            EventProducer::new(brokers, &args.topic)
        }
    };
    let mut destination = match (&args.output, &args.brokers) {
        (Some(path), _) if path.as_os_str() == "-" => {
            Destination::Lines(Box::new(std::io::BufWriter::new(std::io::stdout().lock())))
        }
        (Some(path), _) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            Destination::Lines(Box::new(std::io::BufWriter::with_capacity(1 << 20, file)))
        }
        (None, Some(brokers)) => Destination::Kafka(producer(brokers, false)?),
        (None, None) => {
            let broker = EmbeddedBroker::start()?;
            broker.create_topic(&args.topic, args.partitions)?;
            tracing::warn!(
                brokers = broker.bootstrap_servers(),
                "no --brokers: producing into an embedded broker that stops with this command"
            );
            let kafka = producer(broker.bootstrap_servers(), true)?;
            embedded = Some(broker);
            Destination::Kafka(kafka)
        }
    };
    let records: Box<dyn Iterator<Item = ShopRecord>> = match args.count {
        Some(count) => Box::new(shop.bounded(count as usize)),
        None => Box::new(shop),
    };
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut sent: u64 = 0;
    let mut buffer = Vec::with_capacity(512);
    for record in records {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        destination.send(&record, &mut buffer)?;
        sent += 1;
        if args.rate > 0.0 && sent % 64 == 0 {
            let due = Duration::from_secs_f64(sent as f64 / args.rate);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
        if sent % 65_536 == 0 && last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let rate = sent as f64 / started.elapsed().as_secs_f64();
            tracing::info!(sent, rate = rate.round(), "producing");
        }
        if let Destination::Kafka(producer) = &destination {
            if sent % 1024 == 0 {
                producer.poll();
            }
        }
    }
    let produced_in = started.elapsed();
    let delivered = destination.finish()?;
    let elapsed = started.elapsed();
    let rate = sent as f64 / produced_in.as_secs_f64().max(1e-9);
    tracing::info!(
        sent,
        seconds = format!("{:.2}", elapsed.as_secs_f64()),
        events_per_second = rate.round(),
        "produced"
    );
    eprintln!(
        "produced {sent} events in {:.2} s ({:.0} events/s queued, {:.0} events/s acknowledged)",
        elapsed.as_secs_f64(),
        rate,
        sent as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    if let (Some(broker), Some(delivered)) = (embedded, delivered) {
        let dropped = broker.check_retention(&args.topic, delivered)?;
        if dropped > 0 {
            eprintln!("warning: the embedded broker dropped {dropped} of {delivered} messages (retention limit)");
        }
    }
    Ok(())
}
