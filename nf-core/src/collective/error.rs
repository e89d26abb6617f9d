//! How a collective operation fails (a leaf module: the step names it without importing the
//! collective operations).

/// Why a collective operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CollectiveError {
    /// The transport reported error `code` on rank `rank`.
    Failed {
        /// The rank that saw the error.
        rank: usize,
        /// The transport's error code.
        code: i32,
    },
    /// The ranks disagree on something that must be equal everywhere (`what`).
    Mismatch {
        /// What differs (e.g. "weights").
        what: &'static str,
    },
    /// A host buffer handed to a reduction is shorter than the region to reduce.
    ScratchTooSmall {
        /// Elements needed.
        needed: usize,
        /// Elements given.
        got: usize,
    },
}

impl core::fmt::Display for CollectiveError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CollectiveError::Failed { rank, code } => {
                write!(f, "rank {rank}: collective operation failed (code {code})")
            }
            CollectiveError::Mismatch { what } => write!(f, "the ranks hold different {what}"),
            CollectiveError::ScratchTooSmall { needed, got } => write!(
                f,
                "the reduction buffer holds {got} elements and the region needs {needed}"
            ),
        }
    }
}

impl core::error::Error for CollectiveError {}
