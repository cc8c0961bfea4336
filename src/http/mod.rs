//! HTTP interfaces: webhook ingest, admin API and operator page, health and metrics.

pub mod admin;
pub mod auth;
pub mod charts;
pub mod glance;
pub mod guard;
pub mod health;
pub mod ingest;
pub mod lifecycle;
pub mod operator;
pub mod problem;
mod rollout_panel;
pub mod rollouts;
pub mod stream;
pub mod ui;
pub mod views;
