//! librdkafka properties every Kafka client of this process gets (`--kafka-option
//! key=value`): TLS (`security.protocol=SSL`, `ssl.ca.location`, …), SASL
//! (`security.protocol=SASL_SSL`, `sasl.mechanisms=SCRAM-SHA-512`, `sasl.username`, …) and any
//! other tuning. librdkafka is built with OpenSSL, so SSL and SASL PLAIN/SCRAM work; GSSAPI
//! (Kerberos) is not built in.
//!
//! They are set once, at start, for the whole process (the consumer, the metadata client and
//! the shop's producer alike) and applied after clickflow's own settings, so they may retune
//! them; the few settings exactly-once depends on are refused ([`PROTECTED`]).

use std::sync::OnceLock;

use rdkafka::config::ClientConfig;

/// Settings clickflow's guarantees depend on, which an option may not change: offsets live in
/// PostgreSQL (never committed to Kafka), partitions are assigned, not joined through a group,
/// and the producer is idempotent.
pub const PROTECTED: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "auto.offset.reset",
    "enable.idempotence",
];

/// Names of properties whose values are secrets (never printed).
pub fn is_secret(key: &str) -> bool {
    key.contains("password") || key.contains("secret") || key.ends_with(".pem")
}

/// One `key=value` librdkafka property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaOption {
    /// The property's name.
    pub key: String,
    /// Its value.
    pub value: String,
}

impl std::str::FromStr for KafkaOption {
    type Err = String;

    fn from_str(text: &str) -> Result<KafkaOption, String> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not key=value"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("{text:?} has no key"));
        }
        if PROTECTED.contains(&key) {
            return Err(format!(
                "{key} is set by clickflow (offsets are kept in PostgreSQL, partitions assigned, \
                 the producer idempotent) and cannot be given as an option; give brokers with --brokers"
            ));
        }
        Ok(KafkaOption {
            key: key.to_string(),
            value: value.to_string(),
        })
    }
}

impl std::fmt::Display for KafkaOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = if is_secret(&self.key) {
            "<redacted>"
        } else {
            &self.value
        };
        write!(f, "{}={value}", self.key)
    }
}

static OPTIONS: OnceLock<Vec<KafkaOption>> = OnceLock::new();

/// Sets the options of every client this process creates from now on; once (a second call
/// is an error: the clients made so far would disagree with the later ones).
pub fn set_client_options(options: Vec<KafkaOption>) -> Result<(), String> {
    OPTIONS
        .set(options)
        .map_err(|_| "the Kafka client options are already set".to_string())
}

/// The options set with [`set_client_options`] applied over `config`.
pub(super) fn with_client_options(config: ClientConfig) -> ClientConfig {
    apply_options(config, OPTIONS.get().map_or(&[], Vec::as_slice))
}

/// A client of `brokers` with the process's options (for the clients other crates make: the
/// change feed's producer and admin client, `clickflow tail`).
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    with_client_options(config)
}

/// `options` applied over `config`.
pub fn apply_options(mut config: ClientConfig, options: &[KafkaOption]) -> ClientConfig {
    for option in options {
        config.set(&option.key, &option.value);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_protect_exactly_once() {
        let option: KafkaOption = "sasl.password=hunter2=x".parse().unwrap();
        assert_eq!(option.value, "hunter2=x");
        assert_eq!(option.to_string(), "sasl.password=<redacted>");
        assert!("enable.auto.commit=true".parse::<KafkaOption>().is_err());
        assert!("no-equals".parse::<KafkaOption>().is_err());
    }
}
