//! What a lightweight transaction's answer means, apart from any server.
//!
//! A conditional write answers `[applied] = true | false`, or fails. A failure
//! before the request left (bad statement, no connection, `Unavailable`) means
//! nothing was written. Any other failure (a timeout above all) leaves the
//! outcome unknown: Paxos may have committed it. Every journey write sets a
//! fresh random revision, so reading the row back at `LOCAL_SERIAL` (which
//! finishes any in-flight Paxos round) tells whether *this* write won.

use std::future::Future;

use crate::store::{StoreError, StoreResult};

/// The answer of one conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LwtReply {
    /// `[applied] = true`.
    Applied,
    /// `[applied] = false`: the condition did not hold.
    NotApplied,
    /// Failed before anything could be written (safe to report as an error).
    Failed(String),
    /// Failed in a way that may have committed (timeout, lost connection).
    Uncertain(String),
}

/// Whether this write won, reading the row back when the reply was uncertain.
/// `read_back` returns the row's current revision (`None` when the row or its
/// revision is absent); `ours` is the revision this write set.
pub async fn resolve<F, Fut>(reply: LwtReply, ours: i64, read_back: F) -> StoreResult<bool>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = StoreResult<Option<i64>>>,
{
    match reply {
        LwtReply::Applied => Ok(true),
        LwtReply::NotApplied => Ok(false),
        LwtReply::Failed(message) => Err(StoreError::Unavailable(message)),
        LwtReply::Uncertain(message) => match read_back().await {
            Ok(current) => Ok(current == Some(ours)),
            Err(e) => Err(StoreError::Unavailable(format!(
                "a conditional write ended with \"{message}\" and reading it back failed too ({e}); its outcome is unknown"
            ))),
        },
    }
}

/// Classifies a driver error of a conditional write.
pub fn classify(error: &scylla::errors::ExecutionError) -> LwtReply {
    use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
    let message = error.to_string();
    let nothing_written = match error {
        ExecutionError::BadQuery(_)
        | ExecutionError::EmptyPlan
        | ExecutionError::PrepareError(_)
        | ExecutionError::ConnectionPoolError(_)
        | ExecutionError::UseKeyspaceError(_) => true,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::SerializationError(_)
            | RequestAttemptError::CqlRequestSerialization(_)
            | RequestAttemptError::UnableToAllocStreamId => true,
            RequestAttemptError::DbError(db, _) => matches!(
                db,
                DbError::Unavailable { .. }
                    | DbError::Overloaded
                    | DbError::IsBootstrapping
                    | DbError::SyntaxError
                    | DbError::Invalid
                    | DbError::Unauthorized
                    | DbError::ConfigError
                    | DbError::AlreadyExists { .. }
                    | DbError::Unprepared { .. }
                    | DbError::RateLimitReached { .. }
            ),
            _ => false,
        },
        _ => false,
    };
    if nothing_written {
        LwtReply::Failed(message)
    } else {
        LwtReply::Uncertain(message)
    }
}

/// Reads `[applied]` from the first column of a conditional write's result.
pub fn applied_flag(first_column: Option<&scylla::value::CqlValue>) -> StoreResult<LwtReply> {
    match first_column {
        Some(scylla::value::CqlValue::Boolean(true)) => Ok(LwtReply::Applied),
        Some(scylla::value::CqlValue::Boolean(false)) => Ok(LwtReply::NotApplied),
        other => Err(StoreError::Unavailable(format!(
            "the server answered a conditional write without [applied] ({other:?}); it does not support lightweight transactions"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    async fn never_read() -> StoreResult<Option<i64>> {
        panic!("a definite answer must not be read back")
    }

    #[tokio::test]
    async fn definite_answers_are_taken_as_they_are() {
        assert!(resolve(LwtReply::Applied, 7, never_read).await.unwrap());
        assert!(!resolve(LwtReply::NotApplied, 7, never_read).await.unwrap());
        let err = resolve(LwtReply::Failed("unavailable".into()), 7, never_read)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("unavailable"), "{err}");
    }

    #[tokio::test]
    async fn a_timeout_is_read_back_and_wins_only_with_our_revision() {
        let read = AtomicBool::new(false);
        let won = resolve(LwtReply::Uncertain("write timeout".into()), 7, || async {
            read.store(true, Ordering::SeqCst);
            Ok(Some(7))
        })
        .await
        .unwrap();
        assert!(won && read.load(Ordering::SeqCst));

        let lost = resolve(LwtReply::Uncertain("write timeout".into()), 7, || async {
            Ok(Some(8))
        })
        .await
        .unwrap();
        assert!(!lost, "another writer's revision means this write lost");

        let absent = resolve(LwtReply::Uncertain("timeout".into()), 7, || async {
            Ok(None)
        })
        .await
        .unwrap();
        assert!(!absent);
    }

    #[tokio::test]
    async fn a_failed_read_back_is_an_error_naming_both_failures() {
        let err = resolve(LwtReply::Uncertain("write timeout".into()), 7, || async {
            Err(StoreError::Unavailable("no replica".into()))
        })
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("write timeout") && text.contains("no replica"),
            "{text}"
        );
    }

    #[test]
    fn applied_flag_reads_the_first_column() {
        use scylla::value::CqlValue;
        assert_eq!(
            applied_flag(Some(&CqlValue::Boolean(true))).unwrap(),
            LwtReply::Applied
        );
        assert_eq!(
            applied_flag(Some(&CqlValue::Boolean(false))).unwrap(),
            LwtReply::NotApplied
        );
        assert!(applied_flag(None).is_err());
    }

    #[test]
    fn client_timeouts_are_uncertain_and_bad_statements_are_not() {
        use scylla::errors::{BadQuery, ExecutionError};
        let timeout = ExecutionError::RequestTimeout(std::time::Duration::from_secs(5));
        assert!(matches!(classify(&timeout), LwtReply::Uncertain(_)));
        let bad = ExecutionError::BadQuery(BadQuery::TooManyQueriesInBatchStatement(70_000));
        assert!(matches!(classify(&bad), LwtReply::Failed(_)));
    }
}
