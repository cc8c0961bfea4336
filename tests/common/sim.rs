//! Spawns coolify-sim for tests.
