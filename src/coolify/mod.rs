//! coolify
