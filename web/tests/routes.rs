//! Every route through `warp::test`: happy paths, bad parameters, bad bodies, bad tokens,
//! health and metrics.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use clickflow_dataflow::alerts::series::Series;
use clickflow_dataflow::kpi::sessions::SessionRule;
use clickflow_dataflow::lifecycle::{ModelMonitor, MonitorLimits};
use clickflow_dataflow::rows::{
    AlertKind, AlertRow, ConversionRow, FeatureValues, FunnelRow, Measure, PopularRow, Probability,
    ProductName, RecommendationRow, ScoreRow, SessionItem, SessionRow, Severity, TrendRow,
};
use clickflow_dataflow::window::{Window, WindowSize};
use clickflow_dataflow::{EpochOutput, LiveModel, PipelineMetrics};
use clickflow_model::{ChurnModel, Features, FEATURE_COUNT};
use clickflow_sources::EventType;
use clickflow_web::routes::routes;
use clickflow_web::server::{loopback_hosts, serving};
use clickflow_web::{
    DataflowState, FeedSnapshot, LiveViews, PipelineStatus, SinkSnapshot, WebConfig, WebContext,
    WebError, WebServer,
};
use serde_json::{json, Value};
use warp::http::StatusCode;

const MINUTE: i64 = 60_000;
const T0: i64 = 1_751_932_800_000; // 2025-07-08T00:00:00Z

/// Features of `views` views and `carts` cart adds over `duration_s` seconds; the others
/// as a REST request that leaves them out gets them, with a cart add worth `price`.
fn features(views: f64, carts: f64, duration_s: f64, price: f64) -> Features {
    Features::from_array([
        views,
        carts,
        duration_s,
        0.0,
        views,
        carts * price,
        0.0,
        0.0,
    ])
}

fn trained(seed: u64) -> Arc<ChurnModel> {
    Arc::new(clickflow_testkit::small_model(seed, 5))
}

fn model() -> Arc<ChurnModel> {
    trained(1)
}

fn session(id: &str, views: i64, carts: i64, closed: bool) -> SessionRow {
    SessionRow {
        session_id: id.into(),
        user_id: format!("u-{id}").as_str().into(),
        num_views: views,
        num_cart_adds: carts,
        num_purchases: 0,
        session_start: T0,
        last_event: T0 + 90_000,
        num_products: views,
        cart_value_cents: carts * 1_500,
        closed,
    }
}

fn score(id: &str, p: f64) -> ScoreRow {
    ScoreRow {
        session_id: id.into(),
        session_start: T0,
        user_id: format!("u-{id}").as_str().into(),
        churn_probability: Probability(p),
        model_version: "rf-test".into(),
        features: FeatureValues([1.0; FEATURE_COUNT]),
        as_of: T0 + 90_000,
    }
}

/// Three windows of trends and funnel (the last one open), four sessions of which one closed.
fn epoch() -> EpochOutput {
    let mut output = EpochOutput {
        epoch: 1,
        watermark: T0 + 2 * MINUTE,
        arrived: 500,
        ..EpochOutput::default()
    };
    for w in 0..3 {
        let window = Window {
            start: T0 + w * MINUTE,
            end: T0 + (w + 1) * MINUTE,
        };
        for (i, event_type) in EventType::ALL.into_iter().enumerate() {
            let count = (100 + 10 * w) / (1 + 2 * i as i64);
            output.trends.push((
                TrendRow {
                    window,
                    event_type,
                    count,
                    revenue_cents: if event_type == EventType::Purchase {
                        1999 * count
                    } else {
                        0
                    },
                },
                1,
            ));
            output.funnel.push((
                FunnelRow {
                    window,
                    event_type,
                    unique_users: count / 2,
                },
                1,
            ));
        }
    }
    for (id, views, carts, p) in [("s1", 3, 0, 0.9), ("s2", 5, 2, 0.2), ("s3", 1, 0, 0.7)] {
        output.sessions.push((session(id, views, carts, false), 1));
        output.scores.push((score(id, p), 1));
    }
    output.sessions.push((session("s4", 2, 1, true), 1));
    output
        .alerts
        .push((alert("purchases", AlertKind::Drop, 1, None), 1));
    output
        .alerts
        .push((alert("malformed", AlertKind::Spike, 0, Some(1)), 1));
    recommender(&mut output);
    output
}

/// The recommender's rows: p1's neighbours p2 and p3, p2's p1; session s1 holds p1; the
/// popular products p2, p5, p1.
fn recommender(output: &mut EpochOutput) {
    for (product, rank, neighbour, score, both) in [
        ("p1", 1, "p2", 0.8, 5),
        ("p1", 2, "p3", 0.5, 3),
        ("p2", 1, "p1", 0.7, 5),
    ] {
        let row = RecommendationRow {
            product_id: product.into(),
            rank,
            recommended_id: neighbour.into(),
            score: Measure(score),
            co_sessions: both,
        };
        output.recommendations.push((row, 1));
    }
    let item = SessionItem {
        session_key: SessionItem::key_of("s1"),
        product_key: SessionItem::key_of("p1"),
    };
    output.session_items.push((item, 1));
    let name = ProductName {
        product_key: SessionItem::key_of("p1"),
        product_id: "p1".into(),
    };
    output.product_names.push((name, 1));
    for (rank, product, sessions) in [(1, "p2", 9), (2, "p5", 7), (3, "p1", 6)] {
        let row = PopularRow {
            rank,
            product_id: product.into(),
            sessions,
        };
        output.popular.push((row, 1));
    }
}

/// `funnel_conversion` of the window `minute` minutes after T0: 40 sessions, 10 of them
/// carted in order (a median 30 s later), 4 bought (a median 60 s after the cart).
fn conversion(minute: i64) -> Vec<(ConversionRow, isize)> {
    let window = Window {
        start: T0 + minute * MINUTE,
        end: T0 + (minute + 1) * MINUTE,
    };
    [
        (EventType::Click, 40, 1.0, 5_000),
        (EventType::AddToCart, 10, 0.25, 30_000),
        (EventType::Purchase, 4, 0.4, 60_000),
    ]
    .into_iter()
    .map(|(step, sessions, rate, ms)| {
        let row = ConversionRow {
            window,
            step,
            sessions,
            conversion_from_previous: Some(Measure(rate)),
            median_ms_from_previous: Some(ms),
        };
        (row, 1)
    })
    .collect()
}

/// An alert on `series` opened at window `opened` (minutes after T0), resolved at `resolved`.
fn alert(series: &str, kind: AlertKind, opened: i64, resolved: Option<i64>) -> AlertRow {
    let opened = T0 + opened * MINUTE;
    AlertRow {
        alert_id: format!("{series}:{opened}").as_str().into(),
        kind,
        rule: None,
        series: Series::from_name(series).unwrap(),
        severity: Severity::Critical,
        observed: Measure(0.0),
        expected: Measure(41.0),
        opened,
        latest: opened,
        resolved: resolved.map(|r| T0 + r * MINUTE),
    }
}

struct Server {
    context: WebContext,
    sink: Arc<Mutex<Option<SinkSnapshot>>>,
}

fn server(model: Option<Arc<ChurnModel>>) -> Server {
    let live = model.map(LiveModel::new);
    let loader: Option<clickflow_web::ModelLoader> = live.clone().map(|live| {
        Arc::new(move |model: Arc<ChurnModel>| live.replace(model)) as clickflow_web::ModelLoader
    });
    let views = Arc::new(LiveViews::default());
    views.apply(&epoch());
    let metrics = Arc::new(PipelineMetrics::default());
    metrics.events.store(12_345, Ordering::Relaxed);
    metrics.dead_letters.store(30, Ordering::Relaxed);
    metrics.late.store(10, Ordering::Relaxed);
    metrics.source_retries.store(4, Ordering::Relaxed);
    let sink = Arc::new(Mutex::new(Some(SinkSnapshot {
        connected: true,
        transactions: 7,
        rows: 700,
        freshness_buckets: vec![(0.1, 400), (0.5, 490), (1.0, 500)],
        freshness_events: 500,
        ..SinkSnapshot::default()
    })));
    let probe = sink.clone();
    let status = Arc::new(PipelineStatus::new(
        metrics,
        Arc::new(move || probe.lock().unwrap().clone()),
    ));
    status.set_state(DataflowState::Running);
    Server {
        context: WebContext {
            views,
            model: live,
            monitor: None,
            loader,
            status,
        },
        sink,
    }
}

async fn get(server: &Server, path: &str) -> (StatusCode, String, String) {
    let filter = routes(server.context.clone(), None);
    let response = warp::test::request().path(path).reply(&filter).await;
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        response.status(),
        content_type,
        String::from_utf8(response.body().to_vec()).unwrap(),
    )
}

async fn get_json(server: &Server, path: &str) -> (StatusCode, Value) {
    let (status, content_type, body) = get(server, path).await;
    assert!(
        content_type.starts_with("application/json"),
        "{path}: {content_type}"
    );
    (status, serde_json::from_str(&body).unwrap())
}

async fn predict(server: &Server, content_type: Option<&str>, body: &[u8]) -> (StatusCode, Value) {
    let filter = routes(server.context.clone(), None);
    let mut request = warp::test::request()
        .method("POST")
        .path("/api/v1/churn/predict")
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.reply(&filter).await;
    let body: Value = serde_json::from_slice(response.body()).unwrap();
    (response.status(), body)
}

fn error_of(body: &Value) -> &str {
    body["error"].as_str().expect("a JSON error body")
}

#[tokio::test]
async fn predictions_answer_one_object_or_an_array() {
    let model = model();
    let server = server(Some(model.clone()));
    let one = json!({"num_views": 4, "num_cart_adds": 1, "duration_s": 95.5});
    let (status, body) = predict(
        &server,
        Some("application/json"),
        one.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let price = model.header().defaults.cart_add_price;
    let expected = model.predict(&features(4.0, 1.0, 95.5, price));
    assert_eq!(body["churn_probability"].as_f64(), Some(expected));
    assert_eq!(body["model_version"], model.version());

    let many = json!([
        {"num_views": 1, "num_cart_adds": 0, "duration_s": 0},
        {"num_views": 12, "num_cart_adds": 3, "duration_s": 600}
    ]);
    let (status, body) = predict(
        &server,
        Some("application/json; charset=utf-8"),
        many.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let answers = body.as_array().unwrap();
    assert_eq!(answers.len(), 2);
    assert_eq!(
        answers[1]["churn_probability"].as_f64(),
        Some(model.predict(&features(12.0, 3.0, 600.0, price)))
    );
}

async fn post_model(
    filter: &warp::filters::BoxedFilter<(warp::reply::Response,)>,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut request = warp::test::request()
        .method("POST")
        .path("/api/v1/models")
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.reply(filter).await;
    (
        response.status(),
        serde_json::from_slice(response.body()).unwrap(),
    )
}

#[tokio::test]
async fn a_model_file_is_loaded_over_http_only_with_a_token_and_only_when_it_is_sound() {
    let first = model();
    let second = trained(2);
    assert_ne!(first.version(), second.version());
    let server = server(Some(first.clone()));
    let octets = "application/octet-stream";

    // Without a server token, nobody may replace the model.
    let open = routes(server.context.clone(), None);
    let (status, body) = post_model(&open, None, octets, second.to_bytes()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error_of(&body).contains("--api-token"), "{body}");

    let guarded = routes(server.context.clone(), Some("a-long-enough-token".into()));
    let token = Some("a-long-enough-token");
    let (status, _) = post_model(&guarded, None, octets, second.to_bytes()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = post_model(&guarded, token, "application/json", second.to_bytes()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    let mut damaged = second.to_bytes();
    let at = damaged.len() / 2;
    damaged.truncate(at);
    let (status, body) = post_model(&guarded, token, octets, damaged).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("truncated or damaged"), "{body}");
    let old = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../model/tests/fixtures/format-v1.model"
    ))
    .unwrap();
    let (status, body) = post_model(&guarded, token, octets, old).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("format version 1"), "{body}");
    // Nothing was loaded so far.
    let (_, body) = get_json(&server, "/api/v1/model").await;
    assert_eq!(body["model_version"], first.version());

    let (status, body) = post_model(&guarded, token, octets, second.to_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], second.version());
    let (_, body) = get_json(&server, "/api/v1/model").await;
    assert_eq!(body["model_version"], second.version());
    let one = json!({"num_views": 4, "num_cart_adds": 1, "duration_s": 95.5});
    let (_, body) = predict(
        &server,
        Some("application/json"),
        one.to_string().as_bytes(),
    )
    .await;
    assert_eq!(body["model_version"], second.version());
}

#[tokio::test]
async fn the_model_route_shows_offline_and_live_quality() {
    let model = model();
    let mut server = server(Some(model.clone()));
    let window = WindowSize::from_millis(MINUTE);
    let monitor = Arc::new(ModelMonitor::new(
        SessionRule {
            gap_ms: 30 * MINUTE,
            window,
        },
        MonitorLimits {
            sample_one_in: 1,
            ..MonitorLimits::default()
        },
    ));
    // Two sessions scored by the model, then ended: one bought, one did not.
    let mut scored = EpochOutput::default();
    let mut ended = EpochOutput::default();
    for (id, p, purchases) in [("a", 0.8, 0), ("b", 0.3, 1)] {
        let mut row = score(id, p);
        row.model_version = model.version().into();
        scored.scores.push((row, 1));
        let mut closed = session(id, 3, 1, true);
        closed.num_purchases = purchases;
        ended.sessions.push((closed, 1));
    }
    monitor.observe(&scored);
    monitor.observe(&ended);
    server.context.monitor = Some(monitor);
    let (status, body) = get_json(&server, "/api/v1/model").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["model_version"], model.version());
    let offline = body["offline"]["roc_auc"].as_f64().unwrap();
    assert_eq!(offline, model.header().report.forest.roc_auc);
    let live = &body["live"][0];
    assert_eq!(live["model_version"], model.version());
    assert_eq!(live["sessions"], 2);
    assert_eq!(
        live["roc_auc"], 1.0,
        "the churned session was scored higher"
    );
    let (_, metrics, text) = get(&server, "/metrics").await;
    assert_eq!(metrics.as_str(), "text/plain; version=0.0.4");
    assert!(
        text.contains(&format!(
            "clickflow_model_live_roc_auc{{version=\"{}\"}} 1",
            model.version()
        )),
        "{text}"
    );
    let (status, _) = get_json(&self::server(None), "/api/v1/model").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn bad_prediction_requests_get_a_json_error_naming_the_problem() {
    let server = server(Some(model()));
    let json = Some("application/json");
    let cases: [(&[u8], Option<&str>, StatusCode, &str); 11] = [
        (
            br#"{"num_views": 1, "num_cart_adds": 0}"#,
            json,
            StatusCode::BAD_REQUEST,
            "duration_s",
        ),
        (
            br#"{"num_views": -1, "num_cart_adds": 0, "duration_s": 3}"#,
            json,
            StatusCode::BAD_REQUEST,
            "num_views",
        ),
        (
            br#"{"num_views": "many", "num_cart_adds": 0, "duration_s": 3}"#,
            json,
            StatusCode::BAD_REQUEST,
            "invalid type",
        ),
        (
            br#"{"num_views": 1, "num_cart_adds": 0, "duration_s": 1e999}"#,
            json,
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            br#"{"num_views": 1, "num_cart_adds": 0, "duration_s": 3, "extra": 1}"#,
            json,
            StatusCode::BAD_REQUEST,
            "extra",
        ),
        (
            br#"[{"num_views": 1, "num_cart_adds": 0, "duration_s": 3}, {"num_views": 1}]"#,
            json,
            StatusCode::BAD_REQUEST,
            "item 1",
        ),
        (b"42", json, StatusCode::BAD_REQUEST, "expected an object"),
        (
            b"{not json",
            json,
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            br#"{"num_views": 1, "num_cart_adds": 0, "duration_s": 3}"#,
            Some("text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text/plain",
        ),
        (
            br#"{"num_views": 1, "num_cart_adds": 0, "duration_s": 3}"#,
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/json",
        ),
        (
            &[b' '; 2 << 20],
            json,
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than",
        ),
    ];
    for (body, content_type, expected, mention) in cases {
        let (status, reply) = predict(&server, content_type, body).await;
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).to_string();
        assert_eq!(status, expected, "{shown}: {reply}");
        assert!(error_of(&reply).contains(mention), "{shown}: {reply}");
    }

    let without_model = self::server(None);
    let (status, reply) = predict(
        &without_model,
        json,
        br#"{"num_views": 1, "num_cart_adds": 0, "duration_s": 3}"#,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_of(&reply).contains("--model"));

    let (status, reply) = get_json(&server, "/api/v1/churn/predict").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{reply}");
}

#[tokio::test]
async fn the_json_api_reads_the_live_views() {
    let server = server(None);
    let (status, body) = get_json(&server, "/api/v1/funnel?last=2").await;
    assert_eq!(status, StatusCode::OK);
    let windows = body["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2);
    assert_eq!(windows[0]["window_start"], T0 + MINUTE);
    assert_eq!(windows[0]["complete"], true);
    assert_eq!(
        windows[1]["complete"], false,
        "the newest window is still open"
    );
    assert_eq!(windows[1]["click"], 60);

    let (_, body) = get_json(&server, "/api/v1/trends").await;
    let windows = body["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 3);
    assert_eq!(windows[2]["purchase"], 24);
    assert_eq!(windows[2]["revenue"], 24.0 * 19.99);

    let (_, body) = get_json(&server, "/api/v1/sessions/at-risk?limit=2").await;
    let sessions = body["sessions"].as_array().unwrap();
    let ids: Vec<&str> = sessions
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["s1", "s3"],
        "riskiest first; closed sessions are gone"
    );
    assert_eq!(sessions[0]["churn_probability"], 0.9);
    assert_eq!(sessions[0]["duration_s"], 90.0);

    let (_, body) = get_json(&server, "/api/v1/status").await;
    assert_eq!(body["healthy"], true);
    assert_eq!(body["malformed_total"], 20);
    assert_eq!(body["open_sessions"], 3);
}

#[tokio::test]
async fn bad_parameters_get_400_with_the_reason() {
    let server = server(None);
    for (path, mention) in [
        ("/api/v1/funnel?last=0", "from 1 to"),
        ("/api/v1/funnel?last=abc", "abc"),
        ("/api/v1/trends?last=100000", "from 1 to 120"),
        ("/api/v1/trends?lats=5", "unknown parameter `lats`"),
        ("/api/v1/sessions/at-risk?limit=-3", "limit"),
        ("/api/v1/sessions/at-risk?limit=", "limit"),
    ] {
        let (status, body) = get_json(&server, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(error_of(&body).contains(mention), "{path}: {body}");
    }
    let (status, body) = get_json(&server, "/no/such/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&body).contains("no such route"));
    let (status, _) = get_json(&server, "/charts/nothing.svg").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn charts_are_svg_with_their_data_and_labels() {
    let server = server(None);
    for (name, mentions) in [
        (
            "funnel",
            vec![
                "distinct users",
                "viewed",
                "purchased",
                "latest complete window, 00:01–00:02 UTC",
                "mean per minute",
            ],
        ),
        (
            "trends",
            vec!["events per minute", "add_to_cart", "revenue per minute"],
        ),
        ("churn", vec!["churn probability", "open sessions"]),
    ] {
        let (status, content_type, svg) = get(&server, &format!("/charts/{name}.svg")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "image/svg+xml");
        assert!(svg.starts_with("<svg"), "{name}");
        for mention in mentions {
            assert!(svg.contains(mention), "{name} chart lacks {mention:?}");
        }
        assert!(!svg.contains("waiting"), "{name} chart has data");
    }
    let empty = Server {
        context: WebContext {
            views: Arc::new(LiveViews::default()),
            ..server.context.clone()
        },
        sink: server.sink.clone(),
    };
    let (_, _, svg) = get(&empty, "/charts/funnel.svg").await;
    assert!(svg.contains("waiting for the first complete"), "{svg}");
}

#[tokio::test]
async fn the_page_is_one_self_contained_document() {
    let server = server(None);
    let (status, content_type, html) = get(&server, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"));
    for part in [
        "\"/charts/\"",
        "/api/v1/sessions/at-risk",
        "/api/v1/status",
        "setInterval(refresh, 2000)",
    ] {
        assert!(html.contains(part), "page lacks {part}");
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );
}

#[tokio::test]
async fn alerts_are_listed_open_first_until_they_resolve() {
    let server = server(None);
    let (status, body) = get_json(&server, "/api/v1/alerts").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["open"], 1);
    let alerts = body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    assert_eq!(
        alerts[0]["alert_id"],
        format!("purchases:{}", T0 + MINUTE).as_str()
    );
    assert_eq!(alerts[0]["status"], "open");
    assert_eq!(alerts[0]["kind"], "drop");
    assert_eq!(alerts[0]["expected"], 41.0);
    assert_eq!(alerts[1]["status"], "resolved");
    assert_eq!(alerts[1]["resolved_window_start"], T0 + MINUTE);
    let (_, body) = get_json(&server, "/api/v1/alerts?limit=1").await;
    assert_eq!(body["alerts"].as_array().unwrap().len(), 1);
    for bad in [
        "/api/v1/alerts?limit=0",
        "/api/v1/alerts?limit=x",
        "/api/v1/alerts?since=1",
    ] {
        let (status, body) = get_json(&server, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }

    // The purchase alert resolves in a later epoch: nothing is open any more.
    let open = alert("purchases", AlertKind::Drop, 1, None);
    let resolved = AlertRow {
        resolved: Some(T0 + 4 * MINUTE),
        ..open.clone()
    };
    server.context.views.apply(&EpochOutput {
        epoch: 2,
        alerts: vec![(open, -1), (resolved, 1)],
        ..EpochOutput::default()
    });
    let (_, body) = get_json(&server, "/api/v1/alerts").await;
    assert_eq!(body["open"], 0);
    assert_eq!(
        body["alerts"][0]["alert_id"],
        format!("purchases:{}", T0 + MINUTE).as_str()
    );
    assert_eq!(body["alerts"][0]["status"], "resolved");
    let (_, _, text) = get(&server, "/metrics").await;
    assert!(text.contains("clickflow_alerts_open 0"), "{text}");
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let server = server(Some(model()));
    let (status, content_type, text) = get(&server, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/plain; version=0.0.4"));
    for line in [
        "clickflow_events_total 12345",
        "clickflow_dead_letters_total{reason=\"malformed\"} 20",
        "clickflow_dead_letters_total{reason=\"late\"} 10",
        "clickflow_source_retries_total 4",
        "clickflow_open_sessions 3",
        "clickflow_scores_total 3",
        "clickflow_sink_rows_total 700",
        "clickflow_freshness_seconds_bucket{le=\"0.5\"} 490",
        "clickflow_freshness_seconds_bucket{le=\"+Inf\"} 500",
        "clickflow_sink_commit_seconds_count 7",
        "clickflow_alerts_open 1",
        "# TYPE clickflow_freshness_seconds histogram",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    assert!(text.contains("clickflow_model_info{version=\"rf-"));
    assert!(
        !text.contains("clickflow_changes_published_total"),
        "no change feed, no feed metrics"
    );
}

#[tokio::test]
async fn the_change_feed_has_its_counts_and_publish_lag_in_metrics_and_status() {
    let server = server(None);
    if let Some(sink) = server.sink.lock().unwrap().as_mut() {
        sink.changes = Some(FeedSnapshot {
            published: 900,
            republished: 40,
            failed: 2,
            lag_buckets: vec![(0.05, 700), (0.25, 880), (1.0, 900)],
            lag_changes: 900,
        });
    }
    let (_, _, text) = get(&server, "/metrics").await;
    for line in [
        "clickflow_changes_published_total 900",
        "clickflow_changes_republished_total 40",
        "clickflow_changes_failed_rounds_total 2",
        "# TYPE clickflow_changes_publish_lag_seconds histogram",
        "clickflow_changes_publish_lag_seconds_bucket{le=\"0.25\"} 880",
        "clickflow_changes_publish_lag_seconds_bucket{le=\"+Inf\"} 900",
        "clickflow_changes_publish_lag_seconds_count 900",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    let (_, body) = get_json(&server, "/api/v1/status").await;
    assert_eq!(body["sink"]["changes"]["published"], 900);
    assert_eq!(body["sink"]["changes"]["lag_buckets"][1][1], 880);
}

#[tokio::test]
async fn healthz_says_why_it_is_unhealthy() {
    let server = server(None);
    let (status, body) = get_json(&server, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");

    server.sink.lock().unwrap().as_mut().unwrap().connected = false;
    let (status, body) = get_json(&server, "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["reasons"][0].as_str().unwrap().contains("PostgreSQL"));

    server
        .context
        .status
        .set_state(DataflowState::Failed("source broke".into()));
    let (_, body) = get_json(&server, "/healthz").await;
    assert!(body["reasons"][0]
        .as_str()
        .unwrap()
        .contains("source broke"));
}

#[tokio::test]
async fn with_a_token_every_route_but_healthz_needs_it() {
    let server = server(None);
    let filter = routes(server.context.clone(), Some("s3cret".into()));
    for path in ["/", "/charts/funnel.svg", "/api/v1/funnel", "/metrics"] {
        let response = warp::test::request().path(path).reply(&filter).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        assert!(error_of(&body).contains("Bearer"), "{path}: {body}");
        let response = warp::test::request()
            .path(path)
            .header("authorization", "Bearer wrong")
            .reply(&filter)
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let response = warp::test::request()
            .path(path)
            .header("authorization", "Bearer s3cret")
            .reply(&filter)
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let response = warp::test::request()
        .method("POST")
        .path("/api/v1/churn/predict")
        .header("authorization", "Basic s3cret")
        .body("{}")
        .reply(&filter)
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = warp::test::request().path("/healthz").reply(&filter).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn a_taken_address_is_an_error_naming_the_flag() {
    let server = server(None);
    let config = |addr| WebConfig {
        addr,
        ..WebConfig::default()
    };
    let first = WebServer::start(
        config("127.0.0.1:0".parse().unwrap()),
        server.context.clone(),
    )
    .unwrap();
    let taken = WebServer::start(config(first.addr()), server.context.clone());
    let error = taken.err().expect("the second bind fails");
    assert!(matches!(error, WebError::Bind { .. }), "{error}");
    assert!(error.to_string().contains("--http"), "{error}");
    first.stop();
}

#[tokio::test]
async fn a_loopback_server_answers_only_to_its_own_host_names() {
    let server = server(None);
    let filter = serving(
        server.context.clone(),
        None,
        Some(loopback_hosts(&["dash.internal".into()])),
        &[],
    );
    for host in [
        "127.0.0.1:8080",
        "localhost",
        "LOCALHOST:80",
        "[::1]:8080",
        "dash.internal:8080",
    ] {
        let response = warp::test::request()
            .path("/api/v1/status")
            .header("host", host)
            .reply(&filter)
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{host}");
    }
    // A page of another site whose name resolves to 127.0.0.1 (DNS rebinding).
    for host in [
        "evil.example",
        "evil.example:8080",
        "127.0.0.1.evil.example",
    ] {
        let response = warp::test::request()
            .path("/api/v1/status")
            .header("host", host)
            .reply(&filter)
            .await;
        assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST, "{host}");
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        assert!(error_of(&body).contains("--allowed-host"), "{body}");
    }
    // Without a check (a server on another address) any name is answered.
    let open = serving(server.context.clone(), None, None, &[]);
    let response = warp::test::request()
        .path("/healthz")
        .header("host", "evil.example")
        .reply(&open)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn a_token_shorter_than_sixteen_bytes_is_refused_at_start() {
    let server = server(None);
    let config = |token: &str| WebConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        token: Some(token.into()),
        ..WebConfig::default()
    };
    let error = WebServer::start(config("s3cret"), server.context.clone())
        .err()
        .expect("a six-byte token is refused");
    assert!(matches!(error, WebError::WeakToken(6)), "{error}");
    assert!(error.to_string().contains("at least 16"), "{error}");
    WebServer::start(config("0123456789abcdef"), server.context.clone())
        .unwrap()
        .stop();
}

#[tokio::test]
async fn cross_origin_calls_only_from_the_origins_allowed() {
    let server = server(None);
    // Off by default: no CORS headers, a browser keeps other sites' pages from reading.
    let closed = serving(server.context.clone(), None, None, &[]);
    let response = warp::test::request()
        .path("/api/v1/status")
        .header("origin", "https://admin.shop.example")
        .reply(&closed)
        .await;
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    let open = serving(
        server.context.clone(),
        None,
        None,
        &["https://admin.shop.example".into()],
    );
    let response = warp::test::request()
        .path("/api/v1/status")
        .header("origin", "https://admin.shop.example")
        .reply(&open)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://admin.shop.example"
    );
    let preflight = warp::test::request()
        .method("OPTIONS")
        .path("/api/v1/churn/predict")
        .header("origin", "https://admin.shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .reply(&open)
        .await;
    assert_eq!(preflight.status(), StatusCode::OK);
    let other = warp::test::request()
        .path("/api/v1/status")
        .header("origin", "https://evil.example")
        .reply(&open)
        .await;
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    let body: Value = serde_json::from_slice(other.body()).unwrap();
    assert!(error_of(&body).contains("--cors-origin"), "{body}");
}

/// One HTTP/1.1 GET of `path` over TLS to `addr`, trusting `ca` for `name`: the response.
async fn https_get(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
    name: &str,
    path: &str,
) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_test_certificate() {
    let certs = clickflow_testkit::TestCerts::new();
    let ca = certs.ca("ca");
    let other = certs.ca("other-ca");
    let (cert, key) = certs.server("web", "ca", "DNS:localhost,IP:127.0.0.1");
    let server = server(None);
    let web = WebServer::start(
        WebConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: Some(clickflow_web::https::TlsFiles {
                cert,
                key: key.clone(),
            }),
            ..WebConfig::default()
        },
        server.context.clone(),
    )
    .unwrap();
    let response = https_get(web.addr(), &ca, "localhost", "/healthz")
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#"{"status":"ok"}"#), "{response}");
    let response = https_get(web.addr(), &ca, "localhost", "/api/v1/status")
        .await
        .unwrap();
    assert!(response.contains(r#""healthy":true"#), "{response}");
    // A client that trusts another CA refuses the server.
    let error = https_get(web.addr(), &other, "localhost", "/healthz")
        .await
        .unwrap_err();
    assert!(error.contains("UnknownIssuer"), "{error}");
    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = tokio::net::TcpStream::connect(web.addr()).await.unwrap();
    let mut plain = plain;
    tokio::io::AsyncWriteExt::write_all(
        &mut plain,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut answer),
    )
    .await;
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
    web.stop();

    // A key that does not belong to the certificate stops the start, saying so.
    let error = WebServer::start(
        WebConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: Some(clickflow_web::https::TlsFiles { cert: other, key }),
            ..WebConfig::default()
        },
        server.context.clone(),
    )
    .err()
    .expect("a mismatched pair is refused");
    assert!(matches!(error, WebError::Tls(_)), "{error}");
}

/// The path templates the router's source declares (`warp::path!` and the page at `/`),
/// parameters written `{}`.
fn router_paths() -> std::collections::BTreeSet<String> {
    let mut paths = std::collections::BTreeSet::new();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("warp::path::end()") {
            paths.insert("/".to_string());
        }
        for declared in text.split("warp::path!(").skip(1) {
            let inner = &declared[..declared.find(')').unwrap()];
            let segments: Vec<String> = inner
                .split('/')
                .map(|segment| {
                    let segment = segment.trim();
                    match segment.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                        Some(literal) => literal.to_string(),
                        None => "{}".to_string(),
                    }
                })
                .collect();
            paths.insert(format!("/{}", segments.join("/")));
        }
    }
    paths
}

#[tokio::test]
async fn the_openapi_document_matches_the_router() {
    use clickflow_web::contract::{operations, OPENAPI};
    let document: Value = serde_json::from_str(OPENAPI).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    // Every path of the router is in the document, and no other.
    let documented: std::collections::BTreeSet<String> = operations()
        .into_iter()
        .map(|(template, _)| {
            template
                .split('/')
                .map(|s| if s.starts_with('{') { "{}" } else { s })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    assert_eq!(router_paths(), documented);

    // Every operation of the document is answered: not "no such route", not 405.
    let server = server(Some(model()));
    let filter = serving(server.context.clone(), None, None, &[]);
    // The change stream never ends on its own: closed, it answers and ends at once.
    server.context.views.stream().close();
    for (template, method) in operations() {
        let path = template
            .replace("{chart}", "funnel.svg")
            .replace("{product_id}", "p1");
        let response = warp::test::request()
            .method(&method)
            .path(&path)
            .header("content-type", "application/json")
            .body("{}")
            .reply(&filter)
            .await;
        assert_ne!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert_ne!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
    }
    // It is served, and a 405 says which methods the path takes.
    let served = warp::test::request()
        .path("/api/v1/openapi.json")
        .reply(&filter)
        .await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(served.body()).unwrap(),
        document
    );
    let wrong = warp::test::request()
        .method("DELETE")
        .path("/api/v1/churn/predict")
        .reply(&filter)
        .await;
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers()["allow"], "POST");
}

/// An epoch that counted `n` clicks in the window at `T0 + minute` minutes.
fn clicks(epoch: u64, minute: i64, n: i64) -> EpochOutput {
    let window = Window {
        start: T0 + minute * MINUTE,
        end: T0 + (minute + 1) * MINUTE,
    };
    EpochOutput {
        epoch,
        watermark: window.start,
        arrived: n as u64,
        trends: vec![(
            TrendRow {
                window,
                event_type: EventType::Click,
                count: n,
                revenue_cents: 0,
            },
            1,
        )],
        ..EpochOutput::default()
    }
}

/// A server on a free port, and its views.
fn stream_server() -> (WebServer, Arc<LiveViews>) {
    let server = server(None);
    let web = WebServer::start(
        WebConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..WebConfig::default()
        },
        server.context.clone(),
    )
    .unwrap();
    (web, server.context.views.clone())
}

/// Waits until `count` stream clients are subscribed (each when its request is answered).
fn wait_for_clients(views: &LiveViews, count: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while views.stream().clients() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "{count} clients did not subscribe"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A client of `GET /api/v1/stream` on `addr`, with `Last-Event-ID: last` when given.
fn stream_client(addr: std::net::SocketAddr, last: Option<&str>) -> std::net::TcpStream {
    use std::io::Write;
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    let resume = last.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    write!(
        tcp,
        "GET /api/v1/stream HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n{resume}\r\n"
    )
    .unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    tcp
}

/// Reads SSE events (name, id, data) until `count` are in (keep-alive comments skipped).
fn read_events(tcp: &mut std::net::TcpStream, count: usize) -> Vec<(String, String, String)> {
    read_more_events(tcp, String::new(), count)
}

/// What `tcp` has sent up to the end of its response's head: a stream client is subscribed
/// before its request is answered.
fn read_head(tcp: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut text = String::new();
    let mut buf = [0u8; 1];
    while !text.contains("\r\n\r\n") {
        let n = tcp.read(&mut buf).expect("the stream answers");
        assert!(n > 0, "the stream ended after {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text
}

/// [`read_events`] after `text` was read.
fn read_more_events(
    tcp: &mut std::net::TcpStream,
    mut text: String,
    count: usize,
) -> Vec<(String, String, String)> {
    use std::io::Read;
    let mut buf = [0u8; 4096];
    let parse = |text: &str| -> Vec<(String, String, String)> {
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        body.split("\n\n")
            .filter(|block| block.contains("event:"))
            .map(|block| {
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map_or(String::new(), |v| v.trim().to_string())
                };
                (field("event:"), field("id:"), field("data:"))
            })
            .collect()
    };
    while parse(&text).len() < count {
        let n = tcp.read(&mut buf).expect("the stream answers");
        assert!(n > 0, "the stream ended after {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    parse(&text)
}

#[test]
fn pushed_epochs_arrive_in_order_and_resume_after_the_last_id() {
    let (web, views) = stream_server();
    let mut live = stream_client(web.addr(), None);
    wait_for_clients(&views, 1);
    let first_id: u64 = {
        views.apply(&clicks(10, 5, 7));
        views.apply(&clicks(11, 5, 9));
        views.apply(&clicks(12, 6, 4));
        let events = read_events(&mut live, 3);
        let ids: Vec<u64> = events
            .iter()
            .map(|(_, id, _)| id.parse().unwrap())
            .collect();
        assert_eq!(ids, vec![ids[0], ids[0] + 1, ids[0] + 2], "in order");
        let data: Vec<Value> = events
            .iter()
            .map(|(name, _, data)| {
                assert_eq!(name, "epoch");
                serde_json::from_str(data).unwrap()
            })
            .collect();
        assert_eq!(
            data.iter()
                .map(|d| d["epoch"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            vec![10, 11, 12]
        );
        // Each carries the current row of the window it changed.
        assert_eq!(data[1]["trends"][0]["window_start"], T0 + 5 * MINUTE);
        assert_eq!(data[1]["trends"][0]["click"], 9);
        assert_eq!(data[2]["trends"][0]["click"], 4);
        ids[0]
    };

    // A browser that saw the first event reconnects: it gets the two it missed.
    let mut resumed = stream_client(web.addr(), Some(&first_id.to_string()));
    let missed = read_events(&mut resumed, 2);
    assert_eq!(
        missed
            .iter()
            .map(|(_, id, _)| id.clone())
            .collect::<Vec<_>>(),
        vec![(first_id + 1).to_string(), (first_id + 2).to_string()]
    );
    // An id this server never gave (a restart): start over.
    let mut foreign = stream_client(web.addr(), Some("987654"));
    assert_eq!(read_events(&mut foreign, 1)[0].0, "reset");
    web.stop();
}

#[test]
fn a_stalled_client_is_dropped_and_never_slows_the_pipeline() {
    use std::io::Read;
    let (web, views) = stream_server();
    let mut stalled = stream_client(web.addr(), None);
    wait_for_clients(&views, 1);
    // The client reads nothing while 20,000 epochs are published (each event ~250 bytes:
    // far more than the socket buffers and the client's channel hold). Publishing never
    // waits for it: every apply returns.
    let published = 20_000u64;
    for epoch in 0..published {
        views.apply(&clicks(epoch, (epoch % 100) as i64, 1 + epoch as i64));
    }
    // A client arriving now is served live. (Counting clients cannot tell when it is
    // subscribed: the stalled one may be disconnected at any moment meanwhile.)
    let mut fresh = stream_client(web.addr(), None);
    let head = read_head(&mut fresh);
    views.apply(&clicks(published, 1, 1));
    let event = &read_more_events(&mut fresh, head, 1)[0];
    let data: Value = serde_json::from_str(&event.2).unwrap();
    assert_eq!(data["epoch"], published);

    // The stalled client, reading at last, gets what was buffered and then the end of its
    // stream: it was disconnected, not fed every epoch. (Reading stops at the chunked body's
    // last chunk: the connection itself stays open, kept alive, until the read timeout.)
    let mut everything = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    while !everything.ends_with(b"0\r\n\r\n") {
        match stalled.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => everything.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&everything);
    let received = text.matches("event:epoch").count() as u64;
    assert!(
        received < published,
        "a stalled client got all {received} events"
    );
    assert!(text.ends_with("0\r\n\r\n"), "its stream did not end");
    web.stop();
}

#[tokio::test]
async fn a_session_gets_its_items_neighbours_then_popular_products() {
    let server = server(None);
    let (status, body) = get_json(&server, "/api/v1/recommendations?session_id=s1&k=3").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["known_session"], true);
    assert_eq!(body["items"], json!(["p1"]));
    let recommended = body["recommendations"].as_array().unwrap();
    let ids: Vec<(&str, &str)> = recommended
        .iter()
        .map(|r| {
            (
                r["product_id"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
            )
        })
        .collect();
    // p1's neighbours by score, then the popular products it has not had (p1 is its own).
    assert_eq!(
        ids,
        [("p2", "similar"), ("p3", "similar"), ("p5", "popular")]
    );
    assert_eq!(recommended[0]["score"], 0.8);

    // A session the recommender has not seen gets the popular products.
    let (status, body) =
        get_json(&server, "/api/v1/recommendations?session_id=nobody%20here").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["known_session"], false);
    assert_eq!(body["session_id"], "nobody here");
    let ids: Vec<&str> = body["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["product_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["p2", "p5", "p1"]);

    let (status, body) = get_json(&server, "/api/v1/products/p1/similar?k=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"product_id": "p1", "similar": [
            {"product_id": "p2", "rank": 1, "score": 0.8, "co_sessions": 5}
        ]})
    );
    let (_, body) = get_json(&server, "/api/v1/products/p1/similar").await;
    assert_eq!(body["similar"].as_array().unwrap().len(), 2);

    // A neighbour withdrawn by a later epoch is gone from the answer.
    let withdrawn = EpochOutput {
        epoch: 2,
        recommendations: vec![(
            RecommendationRow {
                product_id: "p1".into(),
                rank: 2,
                recommended_id: "p3".into(),
                score: Measure(0.5),
                co_sessions: 3,
            },
            -1,
        )],
        ..EpochOutput::default()
    };
    server.context.views.apply(&withdrawn);
    let (_, body) = get_json(&server, "/api/v1/products/p1/similar").await;
    assert_eq!(body["similar"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_recommendation_requests_get_a_json_error() {
    let server = server(None);
    let long = format!("/api/v1/recommendations?session_id={}", "x".repeat(300));
    for (path, status, mention) in [
        ("/api/v1/recommendations", 400, "`session_id` is required"),
        (
            "/api/v1/recommendations?session_id=",
            400,
            "`session_id` must be",
        ),
        (
            "/api/v1/recommendations?session_id=s1&k=0",
            400,
            "from 1 to 50",
        ),
        (
            "/api/v1/recommendations?session_id=s1&k=51",
            400,
            "got `51`",
        ),
        (
            "/api/v1/recommendations?session_id=s1&k=ten",
            400,
            "got `ten`",
        ),
        (
            "/api/v1/recommendations?session_id=s1&n=3",
            400,
            "unknown parameter `n`",
        ),
        (
            "/api/v1/recommendations?session_id=a%00b",
            400,
            "none of them control",
        ),
        (long.as_str(), 400, "1 to 256 characters"),
        ("/api/v1/products/p1/similar?k=0", 400, "from 1 to 50"),
        (
            "/api/v1/products/p1/similar?session_id=s1",
            400,
            "unknown parameter",
        ),
        (
            "/api/v1/products/a%0Ab/similar",
            400,
            "none of them control",
        ),
        ("/api/v1/products/p9/similar", 404, "no product `p9`"),
    ] {
        let (got, body) = get_json(&server, path).await;
        assert_eq!(got.as_u16(), status, "{path}: {body}");
        assert!(error_of(&body).contains(mention), "{path}: {body}");
    }
    // Without the recommender both routes say so.
    server.context.views.configure(None, 30 * MINUTE);
    for path in [
        "/api/v1/recommendations?session_id=s1",
        "/api/v1/products/p1/similar",
    ] {
        let (got, body) = get_json(&server, path).await;
        assert_eq!(got, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        assert!(error_of(&body).contains("--no-recommendations"), "{body}");
    }
}

#[tokio::test]
async fn the_ordered_funnel_is_served_and_drawn_once_complete() {
    let server = server(None);
    let views = &server.context.views;
    // A 10-minute conversion window: the window of minute -20 is complete at the watermark
    // (T0 + 2 minutes), the one of minute 1 is not.
    views.configure(Some(15), 10 * MINUTE);
    let mut later = EpochOutput {
        epoch: 2,
        watermark: T0 + 2 * MINUTE,
        ..EpochOutput::default()
    };
    later.conversion.extend(conversion(-20));
    later.conversion.extend(conversion(1));
    views.apply(&later);

    let (status, body) = get_json(&server, "/api/v1/funnel/conversion").await;
    assert_eq!(status, StatusCode::OK);
    let windows = body["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2);
    assert_eq!(windows[0]["window_start"], T0 - 20 * MINUTE);
    assert_eq!(windows[0]["complete"], true);
    assert_eq!(windows[1]["complete"], false);
    let steps: Vec<(&str, i64)> = windows[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["sessions"].as_i64().unwrap()))
        .collect();
    assert_eq!(steps, [("click", 40), ("add_to_cart", 10), ("purchase", 4)]);
    assert_eq!(windows[0]["steps"][2]["conversion_from_previous"], 0.4);
    assert_eq!(windows[0]["steps"][2]["median_time_from_previous_s"], 60.0);
    let (_, body) = get_json(&server, "/api/v1/funnel/conversion?last=1").await;
    assert_eq!(body["windows"][0]["window_start"], T0 + MINUTE);
    let (status, _) = get_json(&server, "/api/v1/funnel/conversion?last=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The chart draws the complete window only.
    let (status, content_type, svg) = get(&server, "/charts/conversion.svg").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "image/svg+xml");
    for mention in [
        "Ordered funnel",
        "then carted",
        "then bought",
        "25.0% of previous",
    ] {
        assert!(svg.contains(mention), "the chart lacks {mention:?}");
    }
    assert!(svg.contains("sessions started 23:40–23:41 UTC"), "{svg}");
}
