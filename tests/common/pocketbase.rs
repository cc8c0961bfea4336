//! Spawns a fresh PocketBase per test suite.
