//! What the sandbox observed: request counters, per-number state (limiter and
//! accepted count) and the per-recipient ledger behind `duplicate_recipients`.
//!
//! The hot path takes no lock over a big map: counters are atomics, numbers
//! sit behind a read-mostly `RwLock` (a handful of ids), and recipients live
//! in 64 `Mutex<HashMap>` shards keyed by a packed phone number (no string
//! allocation per recipient, ~60 bytes each).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use super::rules::{mix64, PairLimit};

/// Counters served by `GET /sandbox/stats` and [`super::SandboxHandle::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxStats {
    /// `POST /{version}/{phone_number_id}/messages` requests received.
    pub requests: u64,
    /// Send requests received and not answered yet (their answer waits
    /// for the configured latency): what a client killed now had on the wire.
    #[serde(default)]
    pub in_flight: u64,
    /// Messages accepted (answered with a wamid).
    pub accepted: u64,
    /// Of those, accepted on the Marketing Messages API's
    /// `/marketing_messages`.
    #[serde(default)]
    pub marketing_messages: u64,
    /// Requests refused with a Graph error, by error code (5xx excluded).
    pub rejected_by_code: BTreeMap<i64, u64>,
    /// Requests answered 500 or 503 by `http_5xx_share`.
    pub http_5xx: u64,
    /// Accepted messages per phone_number_id.
    pub per_number: BTreeMap<String, u64>,
    /// Valid send requests per phone_number_id, admitted or answered 130429
    /// by the throughput limit: what a client sent, whatever the limit let
    /// through (the pacing benchmark measures overshoot with it).
    #[serde(default)]
    pub requests_per_number: BTreeMap<String, u64>,
    /// Distinct recipients that got at least one accepted message.
    pub recipients: u64,
    /// Most accepted messages any one recipient got.
    pub per_recipient_max: u64,
    /// Recipients that got the same campaign (or journey step, or a
    /// triggered campaign's occurrence) more than once (campaign:
    /// `biz_opaque_callback_data` before `|`, else the template name; the
    /// occurrence: what follows the contact after a second `|`).
    pub duplicate_recipients: u64,
    /// Events (statuses and inbound messages) delivered in 2xx webhook POSTs.
    pub webhooks_sent: u64,
    /// Webhook POSTs answered 2xx.
    pub webhook_posts: u64,
    /// Webhook POST attempts that failed (non-2xx or connection error),
    /// retried ones included.
    pub webhook_failures: u64,
    /// Events never delivered: queue full, or every attempt failed.
    pub webhooks_dropped: u64,
    /// Inbound reply messages delivered.
    pub replies_sent: u64,
    /// The SMS API's counters.
    #[serde(default)]
    pub sms: super::SmsStats,
}

/// One business phone number.
pub(crate) struct NumberState {
    /// Small id used in the pair-limit slots of recipient entries.
    pub(crate) idx: u32,
    pub(crate) id: Arc<str>,
    /// Replaced when Meta upgrades the number's throughput.
    limiter: RwLock<Option<DefaultDirectRateLimiter>>,
    requests: AtomicU64,
    accepted: AtomicU64,
    /// While ahead (milliseconds on [`clock_ms`]; 0: never), sends answer
    /// 131057 (maintenance). An atomic: every send reads it.
    maintenance_until: AtomicU64,
}

impl NumberState {
    /// Per-number throughput check (error 130429 when false); counts the
    /// request either way.
    pub(crate) fn admit(&self) -> bool {
        self.requests.fetch_add(1, Relaxed);
        read(&self.limiter)
            .as_ref()
            .is_none_or(|l| l.check().is_ok())
    }

    /// Meta changed the number's throughput: `quota` from now on.
    pub(crate) fn set_quota(&self, quota: Option<Quota>) {
        *write(&self.limiter) = quota.map(RateLimiter::direct);
    }

    /// Puts the number in maintenance for `secs` (0 ends it).
    pub(crate) fn maintain(&self, secs: f64) {
        let until = if secs > 0.0 {
            clock_ms() + (secs * 1000.0) as u64
        } else {
            0
        };
        self.maintenance_until.store(until, Relaxed);
    }

    /// True while the number is in maintenance.
    pub(crate) fn in_maintenance(&self) -> bool {
        let until = self.maintenance_until.load(Relaxed);
        until != 0 && clock_ms() < until
    }
}

/// Milliseconds since the sandbox's clock started (monotonic).
fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// The throughput quota of a number: `mps` per second with `burst` cells.
pub(crate) fn number_quota(mps: f64, burst: u32) -> Option<Quota> {
    if mps <= 0.0 || !mps.is_finite() {
        return None;
    }
    let period = std::time::Duration::from_secs_f64(1.0 / mps);
    let burst = std::num::NonZeroU32::new(burst.max(1))?;
    Quota::with_period(period).map(|q| q.allow_burst(burst))
}

/// Identity-style hasher for already-mixed `u64` keys.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = mix64(self.0 ^ u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        // A different constant from the shard selector, so that keys in one
        // shard still spread over the whole table.
        self.0 = mix64(n ^ 0xA076_1D64_78BD_642F);
    }
}

type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

const SHARDS: usize = 64;

/// A recipient's ledger. The first campaign and the first pair slot are
/// inline; a recipient seen on several campaigns or numbers spills over.
#[derive(Default)]
struct RecipientEntry {
    messages: u32,
    duplicate: bool,
    /// (32-bit campaign hash, messages of that campaign).
    first_campaign: (u32, u32),
    /// (number idx + 1, GCRA arrival time in ns); idx 0 means empty.
    first_pair: (u32, u64),
    more: Option<Box<Overflow>>,
}

#[derive(Default)]
struct Overflow {
    campaigns: Vec<(u32, u32)>,
    pairs: Vec<(u32, u64)>,
}

impl RecipientEntry {
    fn pair_slot(&mut self, number: u32) -> &mut u64 {
        let tag = number + 1;
        if self.first_pair.0 == 0 || self.first_pair.0 == tag {
            self.first_pair.0 = tag;
            return &mut self.first_pair.1;
        }
        let pairs = &mut self.more.get_or_insert_with(Default::default).pairs;
        let pos = match pairs.iter().position(|(t, _)| *t == tag) {
            Some(p) => p,
            None => {
                pairs.push((tag, 0));
                pairs.len() - 1
            }
        };
        &mut pairs[pos].1
    }

    /// Count one more message of `campaign`; returns that campaign's count.
    fn count_campaign(&mut self, campaign: u32) -> u32 {
        if self.messages == 0 || self.first_campaign.0 == campaign {
            self.first_campaign.0 = campaign;
            self.first_campaign.1 += 1;
            return self.first_campaign.1;
        }
        let campaigns = &mut self.more.get_or_insert_with(Default::default).campaigns;
        match campaigns.iter_mut().find(|(c, _)| *c == campaign) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                campaigns.push((campaign, 1));
                1
            }
        }
    }
}

/// Refusal of the pair limit.
pub(crate) struct PairLimited;

/// All counters and ledgers of one sandbox.
pub(crate) struct Stats {
    pub(crate) requests: AtomicU64,
    pub(crate) answering: AtomicU64,
    accepted: AtomicU64,
    pub(crate) marketing_messages: AtomicU64,
    http_5xx: AtomicU64,
    rejected_known: Vec<(i64, AtomicU64)>,
    rejected_other: Mutex<BTreeMap<i64, u64>>,
    numbers: RwLock<HashMap<Box<str>, Arc<NumberState>>>,
    next_number: AtomicU32,
    recipients: Box<[Mutex<KeyMap<RecipientEntry>>]>,
    distinct_recipients: AtomicU64,
    per_recipient_max: AtomicU64,
    duplicate_recipients: AtomicU64,
    pub(crate) webhooks_sent: AtomicU64,
    pub(crate) webhook_posts: AtomicU64,
    pub(crate) webhook_failures: AtomicU64,
    pub(crate) webhooks_dropped: AtomicU64,
    pub(crate) replies_sent: AtomicU64,
}

impl Stats {
    /// `codes`: error codes that get a lock-free counter.
    pub(crate) fn new(codes: impl IntoIterator<Item = i64>) -> Self {
        let mut known: Vec<i64> = codes.into_iter().collect();
        known.sort_unstable();
        known.dedup();
        Self {
            requests: AtomicU64::new(0),
            answering: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            marketing_messages: AtomicU64::new(0),
            http_5xx: AtomicU64::new(0),
            rejected_known: known.into_iter().map(|c| (c, AtomicU64::new(0))).collect(),
            rejected_other: Mutex::new(BTreeMap::new()),
            numbers: RwLock::new(HashMap::new()),
            next_number: AtomicU32::new(0),
            recipients: (0..SHARDS).map(|_| Mutex::new(KeyMap::default())).collect(),
            distinct_recipients: AtomicU64::new(0),
            per_recipient_max: AtomicU64::new(0),
            duplicate_recipients: AtomicU64::new(0),
            webhooks_sent: AtomicU64::new(0),
            webhook_posts: AtomicU64::new(0),
            webhook_failures: AtomicU64::new(0),
            webhooks_dropped: AtomicU64::new(0),
            replies_sent: AtomicU64::new(0),
        }
    }

    pub(crate) fn count_rejected(&self, code: i64) {
        match self.rejected_known.iter().find(|(c, _)| *c == code) {
            Some((_, n)) => {
                n.fetch_add(1, Relaxed);
            }
            None => {
                *lock(&self.rejected_other).entry(code).or_default() += 1;
            }
        }
    }

    pub(crate) fn count_5xx(&self) {
        self.http_5xx.fetch_add(1, Relaxed);
    }

    /// The state of a phone number, created on first use with `quota`.
    pub(crate) fn number(&self, id: &str, quota: Option<Quota>) -> Arc<NumberState> {
        if let Some(n) = read(&self.numbers).get(id) {
            return Arc::clone(n);
        }
        let mut numbers = write(&self.numbers);
        let next = &self.next_number;
        let state = numbers.entry(id.into()).or_insert_with(|| {
            Arc::new(NumberState {
                idx: next.fetch_add(1, Relaxed),
                id: id.into(),
                limiter: RwLock::new(quota.map(RateLimiter::direct)),
                requests: AtomicU64::new(0),
                accepted: AtomicU64::new(0),
                maintenance_until: AtomicU64::new(0),
            })
        });
        Arc::clone(state)
    }

    /// Apply the pair limit and, if admitted, record an accepted message of
    /// `send` (its campaign or journey step, and the occurrence of a
    /// triggered campaign's: a send a recipient may get once).
    /// Returns the recipient's ordinal for this message (1 for the first).
    pub(crate) fn accept(
        &self,
        number: &NumberState,
        recipient_key: u64,
        (campaign, occurrence): (&str, Option<&str>),
        pair: Option<(&PairLimit, u64)>,
    ) -> Result<u32, PairLimited> {
        let campaign = {
            let mut h = super::rules::fnv1a(campaign.as_bytes());
            if let Some(occurrence) = occurrence {
                h = mix64(h ^ super::rules::fnv1a(occurrence.as_bytes()));
            }
            (h ^ (h >> 32)) as u32
        };
        let shard = (mix64(recipient_key) >> 58) as usize % SHARDS;
        let (ordinal, new_recipient, new_duplicate) = {
            let mut map = lock(&self.recipients[shard]);
            let entry = map.entry(recipient_key).or_default();
            if let Some((limit, now_ns)) = pair {
                if !limit.admit(entry.pair_slot(number.idx), now_ns) {
                    return Err(PairLimited);
                }
            }
            let new_recipient = entry.messages == 0;
            let of_campaign = entry.count_campaign(campaign);
            entry.messages += 1;
            let new_duplicate = of_campaign > 1 && !std::mem::replace(&mut entry.duplicate, true);
            (entry.messages, new_recipient, new_duplicate)
        };
        self.accepted.fetch_add(1, Relaxed);
        number.accepted.fetch_add(1, Relaxed);
        if new_recipient {
            self.distinct_recipients.fetch_add(1, Relaxed);
        }
        if new_duplicate {
            self.duplicate_recipients.fetch_add(1, Relaxed);
        }
        self.per_recipient_max
            .fetch_max(u64::from(ordinal), Relaxed);
        Ok(ordinal)
    }

    /// Accepted messages a recipient got.
    pub(crate) fn recipient_messages(&self, recipient_key: u64) -> u32 {
        let shard = (mix64(recipient_key) >> 58) as usize % SHARDS;
        lock(&self.recipients[shard])
            .get(&recipient_key)
            .map_or(0, |e| e.messages)
    }

    pub(crate) fn snapshot(&self) -> SandboxStats {
        let mut rejected_by_code = lock(&self.rejected_other).clone();
        for (code, n) in &self.rejected_known {
            let n = n.load(Relaxed);
            if n > 0 {
                rejected_by_code.insert(*code, n);
            }
        }
        let numbers = read(&self.numbers);
        let per = |count: fn(&NumberState) -> &AtomicU64| {
            numbers
                .values()
                .map(|n| (n.id.to_string(), count(n).load(Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        let per_number = per(|n| &n.accepted);
        let requests_per_number = per(|n| &n.requests);
        drop(numbers);
        SandboxStats {
            requests: self.requests.load(Relaxed),
            in_flight: self.answering.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            marketing_messages: self.marketing_messages.load(Relaxed),
            rejected_by_code,
            http_5xx: self.http_5xx.load(Relaxed),
            per_number,
            requests_per_number,
            recipients: self.distinct_recipients.load(Relaxed),
            per_recipient_max: self.per_recipient_max.load(Relaxed),
            duplicate_recipients: self.duplicate_recipients.load(Relaxed),
            webhooks_sent: self.webhooks_sent.load(Relaxed),
            webhook_posts: self.webhook_posts.load(Relaxed),
            webhook_failures: self.webhook_failures.load(Relaxed),
            webhooks_dropped: self.webhooks_dropped.load(Relaxed),
            replies_sent: self.replies_sent.load(Relaxed),
            sms: Default::default(),
        }
    }

    /// Forget everything: counters, ledgers and limiter state. Webhooks
    /// already scheduled are still delivered (and counted).
    pub(crate) fn reset(&self) {
        write(&self.numbers).clear();
        for shard in self.recipients.iter() {
            *lock(shard) = KeyMap::default();
        }
        lock(&self.rejected_other).clear();
        for (_, n) in &self.rejected_known {
            n.store(0, Relaxed);
        }
        for counter in [
            &self.requests,
            &self.accepted,
            &self.marketing_messages,
            &self.http_5xx,
            &self.distinct_recipients,
            &self.per_recipient_max,
            &self.duplicate_recipients,
            &self.webhooks_sent,
            &self.webhook_posts,
            &self.webhook_failures,
            &self.webhooks_dropped,
            &self.replies_sent,
        ] {
            counter.store(0, Relaxed);
        }
    }
}

// A panic while holding one of these locks is a bug that aborts the process
// in release builds; in tests, keep serving what is there.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many of `sends` requests, one every `gap` after the burst was
    /// spent, the number's quota at `mps` admits (a clock of our own).
    fn admitted_at(mps: f64, gap: std::time::Duration, sends: u32) -> u32 {
        use governor::clock::FakeRelativeClock;
        let clock = FakeRelativeClock::default();
        let quota = number_quota(mps, mps.ceil() as u32).unwrap();
        let limiter = governor::RateLimiter::direct_with_clock(quota, clock.clone());
        while limiter.check().is_ok() {} // the burst
        let mut admitted = 0;
        for _ in 0..sends {
            clock.advance(gap);
            admitted += u32::from(limiter.check().is_ok());
        }
        admitted
    }

    #[test]
    fn the_number_limit_admits_its_rate_and_refuses_just_above_it() {
        let ms = std::time::Duration::from_micros;
        // Exactly 10/s for 100 s: every one.
        assert_eq!(admitted_at(10.0, ms(100_000), 1_000), 1_000);
        // 11/s: one in eleven refused (1,000 sends in 90.9 s earn 909 cells).
        let over = admitted_at(10.0, ms(90_910), 1_000);
        assert!(
            (908..=910).contains(&over),
            "{over} of 1,000 admitted at 11/s"
        );
        // 80/s against 80 mps, and 81/s against it.
        assert_eq!(admitted_at(80.0, ms(12_500), 800), 800);
        let over = admitted_at(80.0, ms(12_346), 810);
        assert!(
            (799..=801).contains(&over),
            "{over} of 810 admitted at 81/s"
        );
    }

    #[test]
    fn duplicates_count_recipients_not_messages() {
        let stats = Stats::new([]);
        let n = stats.number("1", None);
        let ok = |key, campaign| stats.accept(&n, key, (campaign, None), None).ok().unwrap();
        assert_eq!(ok(1, "a"), 1);
        assert_eq!(ok(1, "b"), 2);
        let s = stats.snapshot();
        assert_eq!(
            (s.recipients, s.duplicate_recipients, s.per_recipient_max),
            (1, 0, 2)
        );
        ok(1, "a");
        ok(1, "a");
        ok(2, "a");
        let s = stats.snapshot();
        assert_eq!(
            (s.recipients, s.duplicate_recipients, s.per_recipient_max),
            (2, 1, 4)
        );
        assert_eq!(s.per_number.get("1"), Some(&5));
        assert_eq!(stats.recipient_messages(1), 4);
        // A triggered campaign's occurrences are sends of their own.
        let occ = |key, occurrence| stats.accept(&n, key, ("t", Some(occurrence)), None).is_ok();
        assert!(occ(3, "o-1"));
        assert!(occ(3, "o-2"));
        assert_eq!(stats.snapshot().duplicate_recipients, 1);
        assert!(occ(3, "o-2"));
        assert_eq!(stats.snapshot().duplicate_recipients, 2);
        stats.reset();
        assert_eq!(stats.snapshot(), SandboxStats::default());
    }

    #[test]
    fn pair_slots_are_per_number() {
        let stats = Stats::new([]);
        let a = stats.number("1", None);
        let b = stats.number("2", None);
        let limit = PairLimit::new(6.0, 1).unwrap();
        assert!(stats.accept(&a, 9, ("c", None), Some((&limit, 1))).is_ok());
        assert!(stats.accept(&a, 9, ("c", None), Some((&limit, 2))).is_err());
        assert!(stats.accept(&b, 9, ("c", None), Some((&limit, 2))).is_ok());
        assert!(stats.accept(&b, 9, ("c", None), Some((&limit, 3))).is_err());
        assert_eq!(stats.recipient_messages(9), 2);
    }

    #[test]
    fn rejections_count_known_and_other_codes() {
        let stats = Stats::new([130_429]);
        stats.count_rejected(130_429);
        stats.count_rejected(130_429);
        stats.count_rejected(7);
        let s = stats.snapshot();
        assert_eq!(s.rejected_by_code.get(&130_429), Some(&2));
        assert_eq!(s.rejected_by_code.get(&7), Some(&1));
    }

    #[test]
    fn stats_json_round_trips() {
        let mut s = SandboxStats {
            accepted: 3,
            ..Default::default()
        };
        s.rejected_by_code.insert(131_056, 2);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""131056":2"#));
        assert_eq!(serde_json::from_str::<SandboxStats>(&json).unwrap(), s);
    }
}
