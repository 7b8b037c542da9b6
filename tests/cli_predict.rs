//! `clickflow predict`: feature objects as JSON lines in, the model's probabilities out, in
//! order, with each bad line answered by its error and a failing exit status.

mod common;

use std::io::Write;
use std::process::Stdio;

use clickflow_model::{ChurnModel, Features};
use common::*;

fn model_file(dir: &std::path::Path) -> (ChurnModel, std::path::PathBuf) {
    small_model(dir, 42)
}

fn predict(model: &std::path::Path, input: &str) -> (bool, Vec<serde_json::Value>, String) {
    let mut child = clickflow()
        .args(["predict", "--model", model.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let lines = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        output.status.success(),
        lines,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn each_line_gets_the_models_probability_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (model, path) = model_file(dir.path());
    let sessions = [(1.0, 0.0, 5.0), (6.0, 2.0, 300.0), (3.0, 1.0, 800.0)];
    let mut input: String = sessions
        .iter()
        .map(|(v, c, d)| {
            format!("{{\"num_views\":{v},\"num_cart_adds\":{c},\"duration_s\":{d}}}\n")
        })
        .collect();
    // Every feature given: no default applies.
    input.push_str(concat!(
        r#"{"num_views":4,"num_cart_adds":1,"duration_s":90,"recency_s":60,"#,
        r#""distinct_products":2,"cart_value":35.5,"user_sessions_before":3,"user_purchases_before":1}"#,
        "\n"
    ));
    let (ok, lines, stderr) = predict(&path, &input);
    assert!(ok, "{stderr}");
    assert_eq!(lines.len(), sessions.len() + 1);
    let price = model.header().defaults.cart_add_price;
    assert!(
        (price - 20.0).abs() < 1e-9,
        "the training data's cart-add price"
    );
    for (line, (v, c, d)) in lines.iter().zip(sessions) {
        // The seed's three features, the others by their documented defaults.
        let expected = model.predict(&Features {
            num_views: v,
            num_cart_adds: c,
            duration_s: d,
            recency_s: 0.0,
            distinct_products: v,
            cart_value: c * price,
            user_sessions_before: 0.0,
            user_purchases_before: 0.0,
        });
        assert_eq!(line["churn_probability"].as_f64(), Some(expected));
        assert_eq!(line["model_version"].as_str(), Some(model.version()));
    }
    let full = Features::from_array([4.0, 1.0, 90.0, 60.0, 2.0, 35.5, 3.0, 1.0]);
    assert_eq!(
        lines[3]["churn_probability"].as_f64(),
        Some(model.predict(&full))
    );
}

#[test]
fn a_bad_line_is_answered_by_its_error_and_the_command_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = model_file(dir.path());
    let input = concat!(
        "{\"num_views\":2,\"num_cart_adds\":1,\"duration_s\":60}\n",
        "\n",
        "{\"num_views\":2,\"num_cart_adds\":1,\"duration_s\":60,\"colour\":\"red\"}\n",
        "not json\n",
        "{\"num_views\":-1,\"num_cart_adds\":1,\"duration_s\":60}\n",
        "{\"num_views\":0,\"num_cart_adds\":0,\"duration_s\":0}\n",
    );
    let (ok, lines, stderr) = predict(&path, input);
    assert!(!ok, "the command fails when a line could not be scored");
    assert!(
        stderr.contains("3 of 5 lines could not be scored"),
        "{stderr}"
    );
    assert_eq!(
        lines.len(),
        5,
        "blank lines are skipped, every other line answered"
    );
    assert!(lines[0]["churn_probability"].is_f64());
    assert_eq!(lines[1]["line"], 3);
    assert!(lines[1]["error"].as_str().unwrap().contains("colour"));
    assert_eq!(lines[2]["line"], 4);
    assert!(lines[2]["error"].as_str().unwrap().contains("not JSON"));
    assert_eq!(lines[3]["line"], 5);
    assert!(lines[3]["error"].as_str().unwrap().contains("num_views"));
    assert!(lines[4]["churn_probability"].is_f64());
}
