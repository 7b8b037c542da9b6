//! `--kafka-option` settings reach librdkafka: TLS and SASL are accepted by the librdkafka
//! built here (with OpenSSL), and a wrong value is librdkafka's error, not silence.

use clickflow_sources::kafka::{apply_options, set_client_options, EventProducer, KafkaOption};
use rdkafka::config::ClientConfig;
use rdkafka::producer::BaseProducer;

fn options(pairs: &[&str]) -> Vec<KafkaOption> {
    pairs.iter().map(|pair| pair.parse().unwrap()).collect()
}

#[test]
fn tls_and_sasl_settings_are_built_in_and_reach_the_client() {
    let ca = tempfile::NamedTempFile::new().unwrap();
    let secure = options(&[
        "security.protocol=SASL_SSL",
        "sasl.mechanisms=SCRAM-SHA-512",
        "sasl.username=clickflow",
        "sasl.password=correct horse battery staple",
        "ssl.endpoint.identification.algorithm=https",
    ]);
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", "127.0.0.1:1");
    let config = apply_options(base, &secure);
    assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
    assert_eq!(config.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
    // librdkafka refuses SASL_SSL and SCRAM when built without OpenSSL: creating the client
    // proves they are built in.
    let created: Result<BaseProducer, _> = config.create();
    assert!(created.is_ok(), "{:?}", created.err());

    // A file that is not a certificate: librdkafka itself reads it and refuses.
    std::fs::write(ca.path(), "not a certificate").unwrap();
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", "127.0.0.1:1");
    let bad = apply_options(
        base,
        &options(&[
            "security.protocol=SSL",
            &format!("ssl.ca.location={}", ca.path().display()),
        ]),
    );
    let error = bad
        .create::<BaseProducer>()
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("ssl.ca.location") || error.contains("CA"),
        "{error}"
    );

    // Set for the process, they reach every client clickflow makes: here the producer's.
    set_client_options(options(&["security.protocol=no-such-protocol"])).unwrap();
    let error = EventProducer::new("127.0.0.1:1", "events")
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("security.protocol"), "{error}");
}
