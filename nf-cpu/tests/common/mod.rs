//! Helpers shared by the fast CPU backend's test files.
pub mod case;
