//! Host runner for NeuroFlux.
