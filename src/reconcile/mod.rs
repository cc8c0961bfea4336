//! Reconciliation: pure planning (`plan`) and the executors that carry plans out.

pub mod plan;
