//! Putting `unknown` or `failed` contacts back to pending: the operator's
//! `wadispatch requeue` and the automatic resend of `unknown` after
//! `dispatch.resend_unknown_after_secs`.
//!
//! The trade-off: an `unknown` contact's request may have reached Meta
//! (WhatsApp has no idempotency key), so a requeued one may get the message
//! twice. Status webhooks settle most `unknown` rows within seconds (a
//! `sent` moves the row on); what is still `unknown` long after is most
//! likely a request that never arrived. A `failed`/`transient` contact was
//! refused by Meta and never sent, so requeueing it carries no such risk.

use chrono::{DateTime, Duration, Utc};

use crate::domain::DispatchState;
use crate::store::{DispatchRecord, Requeue, Store, StoreResult};

/// Rows read per page while scanning a campaign.
const PAGE: usize = 2_000;

/// What a requeue takes and what it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequeueSummary {
    /// Rows of the campaign read.
    pub scanned: u64,
    /// Rows that matched the state, class and age.
    pub matched: u64,
    /// Rows put back to pending (0 in a dry run).
    pub requeued: u64,
}

/// When the row reached the state a requeue looks at: for `unknown` the
/// claim (the request's departure), for `failed` the failure.
fn since(row: &DispatchRecord) -> Option<DateTime<Utc>> {
    match row.state {
        DispatchState::Unknown => row.times.claimed,
        DispatchState::Failed => row.times.failed,
        _ => None,
    }
}

/// Whether `row` is taken: its state and class match and it has been in
/// that state at least `older_than` at `now`.
pub fn selects(
    row: &DispatchRecord,
    from: &Requeue,
    older_than: Option<Duration>,
    now: DateTime<Utc>,
) -> bool {
    if !row.requeueable(from) {
        return false;
    }
    match older_than {
        None => true,
        Some(age) => since(row).is_some_and(|t| now.signed_duration_since(t) >= age),
    }
}

/// Scans `campaign` and puts back every matching row (none when
/// `dry_run`). `progress` is told the rows scanned so far.
pub async fn requeue(
    store: &dyn Store,
    campaign: &str,
    from: &Requeue,
    older_than: Option<Duration>,
    dry_run: bool,
    now: DateTime<Utc>,
    mut progress: impl FnMut(u64),
) -> StoreResult<RequeueSummary> {
    let mut summary = RequeueSummary::default();
    let mut after = None;
    loop {
        let page = store
            .scan_dispatches(campaign, after.as_ref(), PAGE)
            .await?;
        for row in &page {
            summary.scanned += 1;
            if !selects(row, from, older_than, now) {
                continue;
            }
            summary.matched += 1;
            // Conditional on the state the row was read in: a status that
            // settled it meanwhile wins.
            if !dry_run && store.requeue(campaign, &row.contact, from).await? {
                summary.requeued += 1;
            }
        }
        progress(summary.scanned);
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.contact.clone()),
            _ => break,
        }
    }
    Ok(summary)
}

/// The `--state`/`--class` pair of the command line as a [`Requeue`].
pub fn parse_selection(state: &str, class: Option<&str>) -> Result<Requeue, String> {
    match (state, class) {
        ("unknown", None) => Ok(Requeue {
            state: DispatchState::Unknown,
            class: None,
        }),
        ("unknown", Some(_)) => Err("--class applies to --state failed only".into()),
        ("failed", class) => Ok(Requeue {
            state: DispatchState::Failed,
            class: class.map(str::to_string),
        }),
        (other, _) => Err(format!(
            "--state {other}: only unknown and failed contacts can be requeued"
        )),
    }
}

/// `30s`, `15m`, `2h`, `7d` (a number and a unit).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: give a unit: s, m, h or d (e.g. 30m)"))?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a whole number before the unit (e.g. 30m)"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
    };
    n.checked_mul(seconds)
        .and_then(Duration::try_seconds)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_selections_parse_with_clear_errors() {
        assert_eq!(parse_age("30m"), Ok(Duration::minutes(30)));
        assert_eq!(parse_age("2d"), Ok(Duration::days(2)));
        assert!(parse_age("30").unwrap_err().contains("unit"));
        assert!(parse_age("3w").unwrap_err().contains("unit must be"));
        assert!(parse_age("99999999999999999d").is_err());
        assert_eq!(
            parse_selection("unknown", None).unwrap().state,
            DispatchState::Unknown
        );
        assert_eq!(
            parse_selection("failed", Some("transient"))
                .unwrap()
                .class
                .as_deref(),
            Some("transient")
        );
        assert!(parse_selection("accepted", None).is_err());
        assert!(parse_selection("unknown", Some("transient")).is_err());
    }
}
