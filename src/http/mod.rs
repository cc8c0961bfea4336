//! HTTP interfaces: webhook ingest, admin API and operator page, health and metrics.

pub mod auth;
pub mod health;
