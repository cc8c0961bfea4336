//! resync
