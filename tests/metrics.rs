//! `/metrics`, read with a Prometheus text parser after known actions: the counts match what
//! was done.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::collections::HashMap;

use common::{call, typed};
use iris::api::{CallerStatus, MessageOutcome};
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::json;

/// One sample's labels and value.
type Sample = (HashMap<String, String>, f64);

/// The samples of one scrape: name → [(labels, value)].
struct Scrape(HashMap<String, Vec<Sample>>);

impl Scrape {
    async fn of(base: &str) -> Self {
        let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
        assert!(response.status().is_success(), "{response:?}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        let lines = text.lines().map(|line| Ok(line.to_owned()));
        let parsed = prometheus_parse::Scrape::parse(lines).unwrap();
        let mut samples: HashMap<String, Vec<Sample>> = HashMap::new();
        for sample in parsed.samples {
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(buckets) => {
                    buckets.last().map_or(0.0, |bucket| bucket.count)
                }
                prometheus_parse::Value::Summary(_) => continue,
            };
            let labels: HashMap<String, String> = sample
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            samples
                .entry(sample.metric)
                .or_default()
                .push((labels, value));
        }
        Self(samples)
    }

    /// The value of `name` with these labels (0 when absent).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(have, _)| {
                labels
                    .iter()
                    .all(|(k, v)| have.get(*k).map(String::as_str) == Some(v))
            })
            .map(|(_, value)| value)
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("iris-metrics-{}", uuid::Uuid::new_v4());
    let config = common::fake_teams_config(dir.path(), &marker);
    let (server, url) = common::serve_http(&config, dir.path());
    let base = server.base();
    let before = Scrape::of(&base).await;
    assert_eq!(before.value("iris_turns_total", &[]), 0.0);
    assert_eq!(before.value("iris_max_processes", &[]), 10.0);

    let client = ().serve(StreamableHttpClientTransport::from_uri(url)).await.unwrap();
    for text in ["one [[cost:0.25]]", "two [[cost:0.5]]"] {
        let outcome: MessageOutcome = typed(
            &client
                .call_tool(call(
                    "send_message",
                    json!({"fromTeam": "frontend", "toTeam": "backend", "message": text}),
                ))
                .await
                .unwrap(),
        );
        assert_eq!(outcome.status, CallerStatus::Completed, "{outcome:?}");
    }
    let failed = client
        .call_tool(call(
            "send_message",
            json!({"fromTeam": "frontend", "toTeam": "nobody", "message": "x"}),
        ))
        .await
        .unwrap();
    assert_eq!(failed.is_error, Some(true));
    let after = Scrape::of(&base).await;
    let backend = [("team", "backend")];
    assert_eq!(after.value("iris_agent_spawns_total", &backend), 1.0);
    assert_eq!(
        after.value("iris_turns_total", &[("team", "backend"), ("state", "ok")]),
        2.0
    );
    assert_eq!(
        after.value(
            "iris_messages_finished_total",
            &[("team", "backend"), ("state", "completed")]
        ),
        2.0
    );
    assert!((after.value("iris_cost_usd_total", &backend) - 0.75).abs() < 1e-9);
    assert_eq!(
        after.value("iris_turn_duration_seconds_count", &backend),
        2.0
    );
    assert_eq!(
        after.value(
            "iris_mcp_calls_total",
            &[("tool", "send_message"), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        after.value(
            "iris_mcp_calls_total",
            &[("tool", "send_message"), ("outcome", "tool_error")]
        ),
        1.0
    );
    assert_eq!(
        after.value("iris_agents", &[("team", "backend"), ("state", "idle")]),
        1.0
    );
    assert_eq!(after.value("iris_agents_live", &[]), 1.0);
    assert_eq!(after.value("iris_http_sessions", &[]), 1.0);
    assert_eq!(after.value("iris_approvals_pending", &[]), 0.0);
    client.cancel().await.unwrap();
    drop(server);
}
