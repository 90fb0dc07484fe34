//! When a contact may be sent (README.md, "Schedule and quiet hours"): the
//! campaign window (`start_at`, `end_at`), the contact's own `send_after`,
//! and quiet hours read on the recipient's clock.
//!
//! The answer is a [`Gate`]: send now, wait until a given instant, or never
//! (the window closes first). Waits are exact instants, DST included, so the
//! campaign actor can park a contact and look again when the wait is over
//! instead of polling.

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use crate::domain::{
    default_timezone_for_region, parse_timezone, region_of, ContactKey, QuietHours, Schedule,
};

/// What the schedule says about sending one contact now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Send now.
    Ready,
    /// Not yet: ask again at this instant (it will then be `Ready` unless
    /// the schedule changed meanwhile).
    WaitUntil(DateTime<Utc>),
    /// The campaign window is over, or closes before the contact could be
    /// sent: exclude it as `outside_window`.
    OutsideWindow,
}

/// The timezone that decides a contact's quiet hours: the record's IANA
/// timezone when it parses, else the default timezone of the phone's
/// country, else `None` (the campaign timezone applies).
///
/// An unknown record timezone falls back rather than failing, for the same
/// reason ingest does not exclude it: quiet hours should still protect the
/// recipient when upstream misspelt a zone name.
pub fn contact_timezone(record_tz: Option<&str>, contact: &ContactKey) -> Option<Tz> {
    record_tz.and_then(parse_timezone).or_else(|| {
        region_of(contact)
            .as_deref()
            .and_then(default_timezone_for_region)
    })
}

/// The campaign as a whole: waiting for `start_at`, inside its window, or
/// past `end_at`. Quiet hours and `send_after` are per contact and not
/// considered (see [`gate`]).
pub fn campaign_gate(schedule: &Schedule, now: DateTime<Utc>) -> Gate {
    let end = schedule.end_utc();
    if end.is_some_and(|end| now >= end) {
        return Gate::OutsideWindow;
    }
    match schedule.start_utc() {
        // A window that ends before it starts (which `validate` rejects)
        // never opens: waiting for its start would only end in OutsideWindow.
        Some(start) if end.is_some_and(|end| start >= end) => Gate::OutsideWindow,
        Some(start) if start > now => Gate::WaitUntil(start),
        _ => Gate::Ready,
    }
}

/// Whether one contact may be sent at `now`.
///
/// The contact is sent at the first instant, at or after `now`, that is at
/// or after `start_at`, at or after `send_after`, and outside quiet hours on
/// the recipient's clock (`contact_tz`, else the campaign timezone). When
/// that instant is `now` the gate is `Ready`; when it is later it is
/// `WaitUntil` it; when it is at or after `end_at` (or `end_at` has passed)
/// it is `OutsideWindow`. Combined waits therefore take the latest: a
/// `send_after` that falls in the night waits further, to the morning.
///
/// Quiet hours end at their local `to` time on the right day, converted
/// with the zone's rules for that day: across a DST change the wait is an
/// hour shorter or longer in UTC, a `to` that falls in a spring-forward gap
/// ends the wait when the gap does (the first instant the clock shows a time
/// past `to`), and a `to` that happens twice (fall-back) ends it at the first
/// of the two still ahead.
pub fn gate(
    schedule: &Schedule,
    contact_tz: Option<Tz>,
    send_after: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Gate {
    let end = schedule.end_utc();
    if end.is_some_and(|end| now >= end) {
        return Gate::OutsideWindow;
    }
    let mut earliest = now;
    for instant in [schedule.start_utc(), send_after].into_iter().flatten() {
        earliest = earliest.max(instant);
    }
    if let Some(quiet) = &schedule.quiet_hours {
        let tz = contact_tz.unwrap_or_else(|| schedule.timezone());
        // One step leaves any sane window. The bound only guards a window
        // so short that a DST gap jumps from one night's end into the next
        // night's start, so that a pathological spec cannot loop.
        for _ in 0..4 {
            if !schedule.is_quiet_at(earliest, contact_tz) {
                break;
            }
            match quiet_end_after(quiet, tz, earliest) {
                Some(next) if next > earliest => earliest = next,
                // Unrepresentable dates (year 262143): nothing sensible to wait for.
                _ => return Gate::OutsideWindow,
            }
        }
    }
    if end.is_some_and(|end| earliest >= end) {
        Gate::OutsideWindow
    } else if earliest == now {
        Gate::Ready
    } else {
        Gate::WaitUntil(earliest)
    }
}

/// The first instant after `instant` (which is inside the quiet window) at
/// which the window's local `to` time has been reached in `tz`.
fn quiet_end_after(quiet: &QuietHours, tz: Tz, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let (from, to) = quiet.parse();
    let local = instant.with_timezone(&tz).naive_local();
    // A window crossing midnight that is entered in the evening ends on the
    // next day; entered after midnight (or not crossing midnight) it ends
    // today.
    let date = if from > to && local.time() >= from {
        local.date().succ_opt()?
    } else {
        local.date()
    };
    let end = date.and_time(to);
    match tz.from_local_datetime(&end) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        // Fall-back: `to` happens twice. Inside the repeated hour the first
        // occurrence may already be behind us.
        LocalResult::Ambiguous(first, second) => {
            let first = first.with_timezone(&Utc);
            Some(if first > instant {
                first
            } else {
                second.with_timezone(&Utc)
            })
        }
        LocalResult::None => gap_end(tz, end),
    }
}

/// The instant a spring-forward gap containing the local time `inside` ends:
/// the first instant whose local time is at or past `inside`.
///
/// domain's `local_to_utc` shifts such a time by the gap's length (02:30 in
/// a 02:00→03:00 gap is 03:30), which is right for a start time someone
/// asked for but would keep a recipient waiting half an hour after their
/// quiet hours ended at 03:00 on their clock; `Schedule::is_quiet_at` agrees
/// that 03:00 is no longer quiet.
fn gap_end(tz: Tz, inside: NaiveDateTime) -> Option<DateTime<Utc>> {
    // The offsets a day either side are those before and after the gap (no
    // zone has two transitions a day apart). The transition instant lies in
    // (inside - after, inside - before]: search it to the second.
    let day = chrono::Duration::days(1);
    let before = offset_seconds(tz, inside.checked_sub_signed(day)?);
    let after = offset_seconds(tz, inside.checked_add_signed(day)?);
    let as_utc = |offset: i64| {
        inside
            .checked_sub_signed(chrono::Duration::seconds(offset))
            .map(|naive| Utc.from_utc_datetime(&naive))
    };
    let (mut lo, mut hi) = (as_utc(after)?, as_utc(before)?);
    let reached = |t: DateTime<Utc>| t.with_timezone(&tz).naive_local() >= inside;
    if lo >= hi || !reached(hi) {
        // Not the gap shape expected: fall back to the domain's rule.
        return crate::domain::local_to_utc(inside, tz);
    }
    // Invariant: `lo` not reached, `hi` reached.
    while hi - lo > chrono::Duration::seconds(1) {
        let mid = lo + (hi - lo) / 2;
        if reached(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// The UTC offset of `tz` in force at the local time `naive` (the earlier
/// one on a fold, the one before on a gap: only used away from transitions).
fn offset_seconds(tz: Tz, naive: NaiveDateTime) -> i64 {
    let offset = match tz.offset_from_local_datetime(&naive) {
        LocalResult::Single(o) | LocalResult::Ambiguous(o, _) => o,
        LocalResult::None => tz.offset_from_utc_datetime(&naive),
    };
    i64::from(offset.fix().local_minus_utc())
}

#[cfg(test)]
mod tests {
    use chrono_tz::America::Mexico_City;
    use chrono_tz::Europe::Madrid;

    use super::*;
    use crate::domain::normalize_phone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn quiet(from: &str, to: &str) -> Option<QuietHours> {
        Some(QuietHours {
            from: from.into(),
            to: to.into(),
        })
    }

    /// A schedule in `tz` with quiet hours `from`-`to` and no window.
    fn nightly(tz: &str, from: &str, to: &str) -> Schedule {
        Schedule {
            timezone: Some(tz.into()),
            quiet_hours: quiet(from, to),
            ..Schedule::default()
        }
    }

    /// A triggered occurrence is due its delay after its event, and the
    /// recipient's quiet hours still hold: a cart abandoned at 20:30 in
    /// Mexico City with a 1 h delay waits for the morning.
    #[test]
    fn a_triggered_occurrence_is_due_after_its_delay_outside_quiet_hours() {
        let trigger = crate::domain::TriggerSpec {
            delay: Some("1h".into()),
            ..Default::default()
        }
        .check()
        .unwrap();
        let s = nightly("America/Mexico_City", "21:00", "08:00");
        // 20:30 local (UTC-6): due 21:30, inside the night.
        let event = utc("2026-12-02T02:30:00Z");
        let due = trigger.due_at(event);
        assert_eq!(due, utc("2026-12-02T03:30:00Z"));
        assert_eq!(
            gate(&s, Some(Mexico_City), Some(due), event),
            Gate::WaitUntil(utc("2026-12-02T14:00:00Z")),
            "08:00 the next morning"
        );
        // 10:00 local: due at 11:00, sent then.
        let event = utc("2026-12-02T16:00:00Z");
        let due = trigger.due_at(event);
        assert_eq!(
            gate(&s, Some(Mexico_City), Some(due), event),
            Gate::WaitUntil(due)
        );
        assert_eq!(gate(&s, Some(Mexico_City), Some(due), due), Gate::Ready);
    }

    fn wait(s: &str) -> Gate {
        Gate::WaitUntil(utc(s))
    }

    /// Local wall time of a gate's wait, for readable DST assertions.
    fn local_wait(g: Gate, tz: Tz) -> String {
        match g {
            Gate::WaitUntil(t) => t.with_timezone(&tz).format("%F %T %Z").to_string(),
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    #[test]
    fn no_schedule_is_ready() {
        let now = utc("2026-11-22T03:00:00Z");
        assert_eq!(gate(&Schedule::default(), None, None, now), Gate::Ready);
        assert_eq!(campaign_gate(&Schedule::default(), now), Gate::Ready);
    }

    #[test]
    fn start_at_in_the_future_waits_and_then_opens() {
        let s = Schedule {
            start_at: Some("2026-11-22T09:00:00".into()),
            timezone: Some("America/Mexico_City".into()),
            ..Schedule::default()
        };
        let before = utc("2026-11-22T14:59:59Z");
        assert_eq!(gate(&s, None, None, before), wait("2026-11-22T15:00:00Z"));
        assert_eq!(campaign_gate(&s, before), wait("2026-11-22T15:00:00Z"));
        let at = utc("2026-11-22T15:00:00Z");
        assert_eq!(gate(&s, None, None, at), Gate::Ready);
        assert_eq!(campaign_gate(&s, at), Gate::Ready);
    }

    #[test]
    fn end_at_reached_is_outside_window() {
        let s = Schedule {
            start_at: Some("2026-11-22T09:00:00".into()),
            end_at: Some("2026-11-23T09:00:00".into()),
            timezone: Some("America/Mexico_City".into()),
            ..Schedule::default()
        };
        let just_before = utc("2026-11-23T14:59:59Z");
        assert_eq!(gate(&s, None, None, just_before), Gate::Ready);
        assert_eq!(campaign_gate(&s, just_before), Gate::Ready);
        for now in [utc("2026-11-23T15:00:00Z"), utc("2027-01-01T00:00:00Z")] {
            assert_eq!(gate(&s, None, None, now), Gate::OutsideWindow);
            assert_eq!(campaign_gate(&s, now), Gate::OutsideWindow);
        }
    }

    #[test]
    fn window_that_ends_before_it_starts_never_opens() {
        let s = Schedule {
            start_at: Some("2026-11-23T09:00:00Z".into()),
            end_at: Some("2026-11-22T09:00:00Z".into()),
            ..Schedule::default()
        };
        let now = utc("2026-11-21T00:00:00Z");
        assert_eq!(campaign_gate(&s, now), Gate::OutsideWindow);
        assert_eq!(gate(&s, None, None, now), Gate::OutsideWindow);
    }

    #[test]
    fn send_after_before_and_after_end() {
        let s = Schedule {
            end_at: Some("2026-11-23T00:00:00Z".into()),
            ..Schedule::default()
        };
        let now = utc("2026-11-22T10:00:00Z");
        // Already passed: no wait.
        let past = Some(utc("2026-11-22T09:00:00Z"));
        assert_eq!(gate(&s, None, past, now), Gate::Ready);
        // In the future, before the end: wait for it.
        let later = Some(utc("2026-11-22T18:00:00Z"));
        assert_eq!(gate(&s, None, later, now), wait("2026-11-22T18:00:00Z"));
        // At or after the end: the contact can never be sent.
        for after_end in ["2026-11-23T00:00:00Z", "2026-11-24T00:00:00Z"] {
            assert_eq!(
                gate(&s, None, Some(utc(after_end)), now),
                Gate::OutsideWindow,
                "{after_end}"
            );
        }
        // Without an end, any send_after is only a wait.
        let open = Schedule::default();
        assert_eq!(
            gate(&open, None, Some(utc("2030-01-01T00:00:00Z")), now),
            wait("2030-01-01T00:00:00Z")
        );
    }

    #[test]
    fn quiet_hours_crossing_midnight_on_the_campaign_clock() {
        // Mexico City, UTC-6 all year since 2022: 21:00-08:00 is 03:00-14:00 UTC.
        let s = nightly("America/Mexico_City", "21:00", "08:00");
        // 22:00 local, the evening: wait to tomorrow 08:00.
        assert_eq!(
            gate(&s, None, None, utc("2026-11-23T04:00:00Z")),
            wait("2026-11-23T14:00:00Z")
        );
        // 02:00 local, after midnight: wait to 08:00 the same day.
        assert_eq!(
            gate(&s, None, None, utc("2026-11-23T08:00:00Z")),
            wait("2026-11-23T14:00:00Z")
        );
        // The edges: `from` is quiet, `to` is not.
        assert_eq!(
            gate(&s, None, None, utc("2026-11-23T03:00:00Z")),
            wait("2026-11-23T14:00:00Z")
        );
        assert_eq!(
            gate(&s, None, None, utc("2026-11-23T14:00:00Z")),
            Gate::Ready
        );
        assert_eq!(
            gate(&s, None, None, utc("2026-11-23T02:59:59Z")),
            Gate::Ready
        );
    }

    #[test]
    fn quiet_hours_on_the_recipient_clock_not_the_campaign_clock() {
        let s = nightly("America/Mexico_City", "21:00", "08:00");
        // 05:00 UTC: 23:00 in Mexico City (quiet), 06:00 in Madrid (quiet,
        // until 08:00 CET = 07:00 UTC), 14:00 in Tokyo (not quiet).
        let now = utc("2026-11-23T05:00:00Z");
        assert_eq!(gate(&s, None, None, now), wait("2026-11-23T14:00:00Z"));
        assert_eq!(
            gate(&s, Some(Madrid), None, now),
            wait("2026-11-23T07:00:00Z")
        );
        assert_eq!(
            gate(&s, Some(chrono_tz::Asia::Tokyo), None, now),
            Gate::Ready
        );
        // 20:00 UTC: 14:00 in Mexico City (fine), 21:00 in Madrid (quiet until
        // 08:00 CET tomorrow).
        let now = utc("2026-11-23T20:00:00Z");
        assert_eq!(gate(&s, None, None, now), Gate::Ready);
        assert_eq!(
            gate(&s, Some(Madrid), None, now),
            wait("2026-11-24T07:00:00Z")
        );
    }

    #[test]
    fn quiet_hours_within_one_day() {
        let s = nightly("Europe/Madrid", "13:00", "15:00");
        // 13:30 CET: wait to 15:00 CET the same day.
        assert_eq!(
            gate(&s, None, None, utc("2026-11-23T12:30:00Z")),
            wait("2026-11-23T14:00:00Z")
        );
        assert_eq!(
            gate(&s, None, None, utc("2026-11-23T11:59:00Z")),
            Gate::Ready
        );
        assert_eq!(
            gate(&s, None, None, utc("2026-11-23T14:00:00Z")),
            Gate::Ready
        );
    }

    #[test]
    fn quiet_hours_that_outlast_the_window_are_outside_it() {
        let mut s = nightly("America/Mexico_City", "21:00", "08:00");
        // Ends at 07:00 local, before the night's quiet hours end.
        s.end_at = Some("2026-11-24T07:00:00".into());
        assert_eq!(
            gate(&s, None, None, utc("2026-11-24T04:00:00Z")),
            Gate::OutsideWindow
        );
        // Ends exactly when they end: nothing can be sent either.
        s.end_at = Some("2026-11-24T08:00:00".into());
        assert_eq!(
            gate(&s, None, None, utc("2026-11-24T04:00:00Z")),
            Gate::OutsideWindow
        );
        // Ends a minute later: wait for the morning.
        s.end_at = Some("2026-11-24T08:01:00".into());
        assert_eq!(
            gate(&s, None, None, utc("2026-11-24T04:00:00Z")),
            wait("2026-11-24T14:00:00Z")
        );
    }

    #[test]
    fn combined_waits_take_the_latest() {
        let mut s = nightly("America/Mexico_City", "21:00", "08:00");
        s.start_at = Some("2026-11-22T09:00:00".into());
        let now = utc("2026-11-20T12:00:00Z");
        // start_at (09:00 local) is later than now and not quiet.
        assert_eq!(gate(&s, None, None, now), wait("2026-11-22T15:00:00Z"));
        // send_after later than start_at wins.
        let send_after = Some(utc("2026-11-22T18:00:00Z"));
        assert_eq!(
            gate(&s, None, send_after, now),
            wait("2026-11-22T18:00:00Z")
        );
        // send_after at 22:00 local falls in the night: wait to the morning after.
        let night = Some(utc("2026-11-23T04:00:00Z"));
        assert_eq!(gate(&s, None, night, now), wait("2026-11-23T14:00:00Z"));
        // start_at at 06:00 for a recipient in Madrid (13:00 CET): fine there,
        // but 06:00 is quiet on the campaign clock.
        s.start_at = Some("2026-11-22T06:00:00".into());
        assert_eq!(gate(&s, None, None, now), wait("2026-11-22T14:00:00Z"));
        assert_eq!(
            gate(&s, Some(Madrid), None, now),
            wait("2026-11-22T12:00:00Z")
        );
    }

    #[test]
    fn madrid_spring_forward_shortens_the_night() {
        // 2026-03-29 02:00 CET → 03:00 CEST. Quiet 21:00-08:00 entered on
        // Saturday 22:00 CET ends at 08:00 CEST, 06:00 UTC (not 07:00).
        let s = nightly("Europe/Madrid", "21:00", "08:00");
        let g = gate(&s, None, None, utc("2026-03-28T21:00:00Z"));
        assert_eq!(g, wait("2026-03-29T06:00:00Z"));
        assert_eq!(local_wait(g, Madrid), "2026-03-29 08:00:00 CEST");
        // A night later, the same wall time is again 06:00 UTC.
        assert_eq!(
            gate(&s, None, None, utc("2026-03-29T21:00:00Z")),
            wait("2026-03-30T06:00:00Z")
        );
        // A night earlier it was 07:00 UTC.
        assert_eq!(
            gate(&s, None, None, utc("2026-03-27T21:00:00Z")),
            wait("2026-03-28T07:00:00Z")
        );
    }

    #[test]
    fn madrid_fall_back_lengthens_the_night() {
        // 2026-10-25 03:00 CEST → 02:00 CET. Quiet entered Saturday 22:00 CEST
        // ends at 08:00 CET, 07:00 UTC (not 06:00).
        let s = nightly("Europe/Madrid", "21:00", "08:00");
        let g = gate(&s, None, None, utc("2026-10-24T20:00:00Z"));
        assert_eq!(g, wait("2026-10-25T07:00:00Z"));
        assert_eq!(local_wait(g, Madrid), "2026-10-25 08:00:00 CET");
    }

    #[test]
    fn quiet_end_in_a_spring_forward_gap_ends_with_the_gap() {
        // 02:30 does not exist on 2026-03-29 in Madrid: the clock goes from
        // 01:59:59 CET to 03:00:00 CEST (01:00 UTC), which is past 02:30.
        let s = nightly("Europe/Madrid", "00:00", "02:30");
        let g = gate(&s, None, None, utc("2026-03-28T23:30:00Z"));
        assert_eq!(g, wait("2026-03-29T01:00:00Z"));
        assert_eq!(local_wait(g, Madrid), "2026-03-29 03:00:00 CEST");
        // Consistent with the domain's quiet check: a second earlier is
        // quiet, the instant itself is not.
        assert!(s.is_quiet_at(utc("2026-03-29T00:59:59Z"), None));
        assert!(!s.is_quiet_at(utc("2026-03-29T01:00:00Z"), None));
        assert_eq!(
            gate(&s, None, None, utc("2026-03-29T01:00:00Z")),
            Gate::Ready
        );
        // Crossing midnight with the end in the gap.
        let s = nightly("Europe/Madrid", "22:00", "02:15");
        assert_eq!(
            gate(&s, None, None, utc("2026-03-28T21:30:00Z")),
            wait("2026-03-29T01:00:00Z")
        );
    }

    #[test]
    fn quiet_end_in_a_fall_back_fold_takes_the_next_occurrence() {
        // 2026-10-25 in Madrid: 02:00-02:59 happens twice (CEST, then CET).
        let s = nightly("Europe/Madrid", "01:00", "02:30");
        // 01:30 CEST: quiet until the first 02:30, CEST (00:30 UTC).
        let g = gate(&s, None, None, utc("2026-10-24T23:30:00Z"));
        assert_eq!(g, wait("2026-10-25T00:30:00Z"));
        assert_eq!(local_wait(g, Madrid), "2026-10-25 02:30:00 CEST");
        // 02:10 CET, the repeated hour: the wall clock is back inside the
        // window, and the first 02:30 is behind; it ends at 02:30 CET.
        let g = gate(&s, None, None, utc("2026-10-25T01:10:00Z"));
        assert_eq!(g, wait("2026-10-25T01:30:00Z"));
        assert_eq!(local_wait(g, Madrid), "2026-10-25 02:30:00 CET");
    }

    #[test]
    fn mexico_city_before_and_after_abolishing_dst() {
        // Mexico City observed DST until 2022-10-30; since then it is UTC-6
        // all year. chrono-tz follows tzdata: 08:00 local in July was 13:00
        // UTC in 2021 and is 14:00 UTC in 2026.
        let s = nightly("America/Mexico_City", "21:00", "08:00");
        let g = gate(&s, None, None, utc("2021-07-15T04:00:00Z"));
        assert_eq!(g, wait("2021-07-15T13:00:00Z"));
        assert_eq!(local_wait(g, Mexico_City), "2021-07-15 08:00:00 CDT");
        let g = gate(&s, None, None, utc("2026-07-15T04:00:00Z"));
        assert_eq!(g, wait("2026-07-15T14:00:00Z"));
        assert_eq!(local_wait(g, Mexico_City), "2026-07-15 08:00:00 CST");
        // No spring-forward on the first Sunday of April 2026 any more.
        assert_eq!(
            gate(&s, None, None, utc("2026-04-05T04:00:00Z")),
            wait("2026-04-05T14:00:00Z")
        );
    }

    #[test]
    fn mexico_city_last_dst_changes() {
        // 2022-04-03 02:00 CST → 03:00 CDT: the night is an hour shorter and
        // an end at 02:30 ends with the gap, 03:00 CDT (08:00 UTC).
        let s = nightly("America/Mexico_City", "21:00", "08:00");
        assert_eq!(
            gate(&s, None, None, utc("2022-04-03T04:00:00Z")),
            wait("2022-04-03T13:00:00Z")
        );
        let s = nightly("America/Mexico_City", "22:00", "02:30");
        let g = gate(&s, None, None, utc("2022-04-03T05:00:00Z"));
        assert_eq!(g, wait("2022-04-03T08:00:00Z"));
        assert_eq!(local_wait(g, Mexico_City), "2022-04-03 03:00:00 CDT");
        // 2022-10-30 02:00 CDT → 01:00 CST, the last change: the night is an
        // hour longer (08:00 CST = 14:00 UTC).
        let s = nightly("America/Mexico_City", "21:00", "08:00");
        assert_eq!(
            gate(&s, None, None, utc("2022-10-30T03:00:00Z")),
            wait("2022-10-30T14:00:00Z")
        );
    }

    #[test]
    fn a_wait_always_ends_ready_and_is_never_early() {
        // For every quarter hour over both 2026 Madrid transitions, with a
        // window crossing midnight and one not: the gate agrees with the
        // domain's quiet check, and a wait ends on a sendable instant whose
        // previous second was still quiet (so no time is wasted either).
        let windows = [("21:00", "08:00"), ("01:00", "02:30"), ("00:00", "02:30")];
        for (from, to) in windows {
            let s = nightly("Europe/Madrid", from, to);
            for start in ["2026-03-27T00:00:00Z", "2026-10-23T00:00:00Z"] {
                let mut now = utc(start);
                for _ in 0..(4 * 24 * 4) {
                    match gate(&s, None, None, now) {
                        Gate::Ready => assert!(!s.is_quiet_at(now, None), "{now}"),
                        Gate::WaitUntil(t) => {
                            assert!(t > now && s.is_quiet_at(now, None), "{now}");
                            assert_eq!(gate(&s, None, None, t), Gate::Ready, "{from}-{to} {now}");
                            let just_before = t - chrono::Duration::seconds(1);
                            assert!(s.is_quiet_at(just_before, None), "{from}-{to} {now} → {t}");
                        }
                        Gate::OutsideWindow => panic!("no end_at, yet outside at {now}"),
                    }
                    now += chrono::Duration::minutes(15);
                }
            }
        }
    }

    #[test]
    fn contact_timezone_from_record_phone_or_none() {
        let mx_phone = normalize_phone("+52 55 1234 5678", None).unwrap();
        let es_phone = normalize_phone("+34 612 345 678", None).unwrap();
        // The record's timezone wins over the phone's country.
        assert_eq!(
            contact_timezone(Some("America/Tijuana"), &mx_phone),
            Some(chrono_tz::America::Tijuana)
        );
        // A Spanish mobile with no record timezone: Madrid.
        assert_eq!(contact_timezone(None, &es_phone), Some(Madrid));
        // An unknown record timezone falls back to the phone's country.
        assert_eq!(contact_timezone(Some("Mars/Base"), &es_phone), Some(Madrid));
        assert_eq!(contact_timezone(Some(""), &mx_phone), Some(Mexico_City));
        // A US number spans zones; a user id has no country: the campaign's applies.
        let us_phone = normalize_phone("+1 415 555 2671", None).unwrap();
        assert_eq!(contact_timezone(None, &us_phone), None);
        assert_eq!(contact_timezone(None, &ContactKey::raw("US.abc123")), None);
        assert_eq!(
            contact_timezone(Some("nope"), &ContactKey::raw("junk")),
            None
        );
        // A user id with a record timezone uses it.
        assert_eq!(
            contact_timezone(Some("Europe/Madrid"), &ContactKey::raw("US.abc123")),
            Some(Madrid)
        );
    }
}
