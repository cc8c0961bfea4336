//! pocketbase

pub mod realtime;
