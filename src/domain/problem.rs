//! One thing wrong with a campaign spec, with the path of the field at
//! fault: what spec validation and template compilation report, every
//! problem at once.

use std::fmt;

/// One thing wrong with a spec, with the path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Path of the field (`senders[1]`, `schedule.timezone`).
    pub field: String,
    /// What is wrong, naming the value.
    pub message: String,
}

impl SpecProblem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> SpecProblem {
        SpecProblem {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecProblem {
    /// `field: message`; a message that is a predicate about the field
    /// ("is missing") reads as a sentence: `template.name is missing`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.starts_with("is ") {
            write!(f, "{} {}", self.field, self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for SpecProblem {}
