//! Host runner for NeuroFlux.
pub mod data;
