//! The limits that keep every planned size far from overflow: the largest input, class count,
//! head width and batch any flag, description or data file may ask for. A leaf module: the
//! argument parsers, the model descriptions and the data readers all check against it.

/// Largest channel count accepted by `--input` (keeps every planned size far from overflow).
pub const MAX_INPUT_CHANNELS: usize = 4096;
/// Largest height or width accepted by `--input`.
pub const MAX_INPUT_SIDE: usize = 8192;
/// Largest `--classes`.
pub const MAX_CLASSES: usize = 65536;
/// Largest head width (`--f-max`, `--f-min`, `--ll-filters`).
pub const MAX_FILTERS: usize = 4096;
/// Largest batch size (`--batch-min`, `--batch-max`).
pub const MAX_BATCH: usize = 65536;
