//! Shared test harness: real PocketBase, coolify-sim and the bridge, each on a free port.
#![allow(dead_code)]

pub mod pocketbase;
pub mod sim;
pub mod bridge;
pub mod admin;
pub mod promtext;
