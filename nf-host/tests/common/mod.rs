//! Helpers shared by the host backend's test files.
pub mod case;
