//! `GET /metrics`: the server's counters in the Prometheus text format — HTTP requests by
//! endpoint and status, tokens by model, and per model its engine's state, queue, active
//! requests and its load, eviction (swap) and failure counts.
//!
//! Request and token counters are kept here as requests finish; what the supervisor knows (state,
//! queue, transitions) is read from its status when the metrics are scraped, so the two can never
//! disagree with `gemmactl ps`.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::domain::Usage;
use crate::supervisor::status::ProcessStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    model: String,
    state: String,
}

/// The phases a model's engine can be in, as `/metrics` names them.
const STATES: [&str; 6] = ["stopped", "starting", "ready", "busy", "stopping", "failed"];

/// Every metric of one server.
pub(super) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    queue: Family<ModelLabels, Gauge>,
    active: Family<ModelLabels, Gauge>,
    state: Family<StateLabels, Gauge>,
    loads: Family<ModelLabels, Counter>,
    evictions: Family<ModelLabels, Counter>,
    failures: Family<ModelLabels, Counter>,
    served: Family<ModelLabels, Counter>,
    /// Scrapes copy the supervisor's counts in one at a time.
    scrape: Mutex<()>,
}

impl Metrics {
    pub(super) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gemmactl");
        let m = Metrics {
            requests: Family::default(),
            tokens: Family::default(),
            queue: Family::default(),
            active: Family::default(),
            state: Family::default(),
            loads: Family::default(),
            evictions: Family::default(),
            failures: Family::default(),
            served: Family::default(),
            scrape: Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by endpoint and status",
            m.requests.clone(),
        );
        registry.register(
            "tokens",
            "Tokens read (prompt) and generated (completion), by model",
            m.tokens.clone(),
        );
        registry.register(
            "queue_length",
            "Requests waiting for a decode slot, by model",
            m.queue.clone(),
        );
        registry.register(
            "requests_active",
            "Requests being decoded, by model",
            m.active.clone(),
        );
        registry.register(
            "engine_state",
            "1 for the state each model's engine is in",
            m.state.clone(),
        );
        registry.register(
            "engine_loads",
            "Engine starts (loads, reloads, restarts), by model",
            m.loads.clone(),
        );
        registry.register(
            "engine_evictions",
            "Engines stopped to make room for another model (swaps), by model",
            m.evictions.clone(),
        );
        registry.register(
            "engine_failures",
            "Failed engine starts and engine crashes, by model",
            m.failures.clone(),
        );
        registry.register(
            "engine_requests_served",
            "Requests an engine completed, by model",
            m.served.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one answered request.
    pub(super) fn request(&self, endpoint: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    /// Counts a finished reply's tokens.
    pub(super) fn tokens(&self, model: &str, usage: &Usage) {
        for (kind, n) in [
            ("prompt", usage.prompt_tokens),
            ("completion", usage.completion_tokens),
        ] {
            self.tokens
                .get_or_create(&TokenLabels {
                    model: model.to_string(),
                    kind: kind.to_string(),
                })
                .inc_by(n as u64);
        }
    }

    /// The text format, with the supervisor's figures as of now.
    pub(super) fn render(&self, status: &ProcessStatus) -> String {
        let _one = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in &status.engines {
            let model = ModelLabels {
                model: e.model.clone(),
            };
            self.queue.get_or_create(&model).set(e.queued as i64);
            self.active.get_or_create(&model).set(e.active as i64);
            let current = e.state.to_string();
            for state in STATES {
                self.state
                    .get_or_create(&StateLabels {
                        model: e.model.clone(),
                        state: state.to_string(),
                    })
                    .set(i64::from(state == current));
            }
            for (family, total) in [
                (&self.loads, e.loads),
                (&self.evictions, e.evictions),
                (&self.failures, e.failures),
                (&self.served, e.requests_served),
            ] {
                let counter = family.get_or_create(&model);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
