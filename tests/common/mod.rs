//! Shared test harness: real PocketBase, coolify-sim and the bridge, each on a free port.
#![allow(dead_code)]

pub mod admin;
pub mod bridge;
pub mod e2e;
pub mod faultproxy;
pub mod pocketbase;
pub mod promtext;
pub mod reliability;
pub mod secrets_stack;
pub mod sim;
