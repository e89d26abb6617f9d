//! How the errors of nf-core's entry points read: [`PlanError`] (the planner), [`StepError`]
//! (a training step) and [`TrainError`] (a schedule over a data source) implement
//! [`Display`](core::fmt::Display), one lower-case sentence without a trailing period that a
//! caller can print after its own context (`error: {context}: {e}`), and
//! [`core::error::Error`] wherever the errors they wrap do.
//!
//! A wrapped error (a backend's or a data source's) is shown as it is: its message is the
//! wrapper's message and its [`source`](core::error::Error::source) is the wrapper's source, so
//! a caller that prints the chain of sources never prints the same message twice.
//!
//! ```
//! use nf_core::plan::{plan, Mode, PlanOptions};
//! use nf_core::zoo;
//!
//! let e = plan(&zoo::VGG11, zoo::VGG11.input, 10, 1024, Mode::Bp, &PlanOptions::DEFAULT)
//!     .unwrap_err();
//! assert!(e.to_string().starts_with("the budget is too small"));
//! let _: &dyn core::error::Error = &e;
//! ```
use core::error::Error;
use core::fmt;

use crate::plan::PlanError;
use crate::schedule::TrainError;
use crate::step::StepError;

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::BudgetTooSmall { needed } => write!(
                f,
                "the budget is too small: this model, input and mode need at least {needed} bytes"
            ),
            PlanError::BadInput => f.write_str(
                "the model does not accept this input shape and class count \
                 (a layer's input is too small, or there are no classes)",
            ),
            PlanError::BadOptions(why) => write!(f, "inconsistent planner options: {why}"),
        }
    }
}

impl Error for PlanError {}

impl<E: fmt::Display> fmt::Display for StepError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::ArenaTooSmall { needed, got } => write!(
                f,
                "the arena holds {got} bytes and the block's layout needs {needed}"
            ),
            StepError::BatchTooLarge { n, batch } => write!(
                f,
                "{n} samples given to a step planned for batches of at most {batch}"
            ),
            StepError::Backend(e) => e.fmt(f),
            StepError::Collective(e) => e.fmt(f),
        }
    }
}

impl<E: Error> Error for StepError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            StepError::Backend(e) => e.source(),
            _ => None,
        }
    }
}

impl<BE: fmt::Display, FE: fmt::Display> fmt::Display for TrainError<BE, FE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Step(e) => e.fmt(f),
            TrainError::Feed(e) => e.fmt(f),
        }
    }
}

impl<BE: Error, FE: Error> Error for TrainError<BE, FE> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            TrainError::Step(e) => e.source(),
            TrainError::Feed(e) => e.source(),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::{String, ToString};

    use super::*;

    /// A backend error with a cause, to see that the wrappers pass both through.
    #[derive(Debug)]
    struct Outer(Inner);
    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("kernel launch failed")
        }
    }
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("device lost")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }
    impl Error for Inner {}

    #[test]
    fn plan_errors_say_what_is_wrong() {
        let e = PlanError::BudgetTooSmall { needed: 123_456 };
        assert_eq!(
            e.to_string(),
            "the budget is too small: this model, input and mode need at least 123456 bytes"
        );
        assert!(PlanError::BadInput.to_string().contains("input shape"));
        assert_eq!(
            PlanError::BadOptions("workers must be at least 1").to_string(),
            "inconsistent planner options: workers must be at least 1"
        );
    }

    #[test]
    fn step_errors_name_both_sizes_and_pass_a_backend_error_through() {
        let e: StepError<Outer> = StepError::ArenaTooSmall {
            needed: 4096,
            got: 4092,
        };
        assert_eq!(
            e.to_string(),
            "the arena holds 4092 bytes and the block's layout needs 4096"
        );
        assert!(e.source().is_none());
        let e: StepError<Outer> = StepError::BatchTooLarge { n: 9, batch: 8 };
        assert_eq!(
            e.to_string(),
            "9 samples given to a step planned for batches of at most 8"
        );
        let e = StepError::Backend(Outer(Inner));
        assert_eq!(e.to_string(), "kernel launch failed");
        assert_eq!(e.source().unwrap().to_string(), "device lost");
    }

    #[test]
    fn train_errors_read_as_the_error_they_wrap() {
        let e: TrainError<Outer, String> = TrainError::Feed(String::from("images.idx: truncated"));
        assert_eq!(e.to_string(), "images.idx: truncated");
        let e: TrainError<Outer, Inner> = TrainError::Step(StepError::Backend(Outer(Inner)));
        assert_eq!(e.to_string(), "kernel launch failed");
        assert_eq!(e.source().unwrap().to_string(), "device lost");
    }
}
