//! Every integration test, in one binary (as wasmtime's tests/all does):
//! wasmtime is linked once, not once per topic. Each module is a topic;
//! `support` holds what they share (the compiled components, the simulator,
//! the external servers). Every test runs a compiled component in the host.
//!
//! - `sync`: syncs of the simulator, resume, retries, licenses
//! - `provision`: each write, its repeat and its errors, then a sync
//! - `cli`: the `tether` binary as an operator runs it, signals included
//! - `review`: access reviews from the sync file, `tether diff` and `tether export`
//! - `report`: `tether report`'s page, in a real headless Chromium
//! - `sandbox`: hostile connectors against every limit and policy
//! - `spec`: every request validated against Asana's OpenAPI spec (Prism)
//! - `oci`: connectors pushed to and pulled from a real OCI registry
//! - `scim_real_server`: the SCIM client against a real SCIM 2.0 server
//! - `scim_connector`: the generic SCIM connector against real SCIM servers, and beside Asana's
//! - `serve`: `tether serve` through its HTTP API, files and signals
//! - `serve_oci`: `tether serve` following OCI tags and pins in a real registry
//! - `upstream_limits`: the limits a connector declares (contract 0.4.0), clamped and overridden

mod support;

mod cli;
mod oci;
mod provision;
mod report;
mod review;
mod sandbox;
mod scim_connector;
mod scim_real_server;
mod serve;
mod serve_oci;
mod spec;
mod sync;
mod upstream_limits;
