//! hubcast's end-to-end tests: one test binary, one module per area (each
//! was a test binary of its own, linking axum, redis and reqwest again).
//!
//! The modules share one process and run in parallel, so no test may rely
//! on process-wide state being its own: tests that read the metrics
//! recorder (a global, installed once per process) run themselves again in
//! a process of their own ([`common::in_own_process`]), and tests that
//! disturb a Redis (`CLIENT KILL`) use a Redis server of their own. No test
//! sets environment variables of this process (children get theirs).

// First: `both_engines!` is used by the modules after it.
#[macro_use]
mod common;

mod admission;
mod api;
mod auth;
mod bad_input;
mod bench;
mod broker_contract;
mod broker_failure;
mod client;
mod closing;
mod controls;
mod faults;
mod framing;
mod fuzz;
mod ghosts;
mod hooks;
mod jwks;
mod lifecycle;
mod limits;
mod metrics;
mod multinode;
mod nats_outage;
mod nats_restart;
mod openapi;
mod operate;
#[cfg(feature = "otlp")]
mod otlp;
mod outage;
mod poll;
mod presence_storm;
mod protocol;
mod proxies;
mod recovery;
mod redis_cluster;
mod redis_oom;
mod redis_outage;
mod redis_timeout;
mod rolling;
mod rules;
mod settings;
mod sse;
mod subs;
mod subscribe;
mod tls;
mod tracing;
mod validation;
mod web;
mod webhooks;
mod write_delay;
