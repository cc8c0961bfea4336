//! http

pub mod ingest;
