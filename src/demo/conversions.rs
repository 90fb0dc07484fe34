//! The demo's conversion stream, as an upstream shop would publish it on
//! `wa.conversions`: one collections contact in four pays after its
//! payment reminder (the goal stops the follow-up), one cart reminder in
//! three is followed by its purchase (half credited by the upstream to
//! the occurrence, half left to attribution), one conversion in five is
//! published twice (a retried webhook), and a few conversions are credited
//! to no campaign or cannot be read at all.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::domain::DispatchState;
use crate::store::{DispatchRecord, Store};

/// What the stream published, for the demo's wait and its summary.
#[derive(Debug, Default)]
pub(super) struct Published {
    pub records: AtomicU64,
    pub repeats: AtomicU64,
    pub payments: AtomicU64,
    pub purchases: AtomicU64,
    /// Conversions no campaign can be credited with.
    pub orphans: AtomicU64,
    pub unreadable: AtomicU64,
    /// Every conversion is out: nothing more will come.
    pub finished: AtomicBool,
}

/// Contacts that no demo campaign messages.
const ORPHANS: &[&str] = &["+5215500000901", "+5215500000902", "+5215500000903"];

/// Publishes conversions for the journey's and the cart campaign's
/// accepted messages as they go, until both have none left to send.
pub(super) async fn run(
    producer: FutureProducer,
    topic: String,
    store: Arc<dyn Store>,
    journey: String,
    cart: String,
    carts: u64,
    out: Arc<Published>,
) -> anyhow::Result<()> {
    let mut handled: HashSet<String> = HashSet::new();
    let publish = |key: String, value: String| {
        let (producer, topic) = (producer.clone(), topic.clone());
        async move {
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| anyhow::anyhow!("publishing a conversion: {e}"))
        }
    };
    loop {
        let mut open = 0u64;
        let mut seen_carts = 0u64;
        for (campaign, is_cart) in [(&journey, false), (&cart, true)] {
            let rows = all_rows(store.as_ref(), campaign).await?;
            for row in &rows {
                let first_step = row.step.is_empty();
                // A deferred contact (131049) waits a day for its retry:
                // settled for the demo, as its wait says.
                if first_step
                    && matches!(row.state, DispatchState::Pending | DispatchState::Claimed)
                {
                    open += 1;
                    continue;
                }
                let key = format!("{campaign}|{}", row.contact.row_str());
                if row.times.accepted.is_none() || !handled.insert(key) {
                    continue;
                }
                let n = digits(row.contact.as_str());
                let value = if is_cart {
                    cart_purchase(campaign, row, n)
                } else {
                    n.is_multiple_of(4).then(|| {
                        let amount = 250 + 50 * (n % 5);
                        format!(r#"{{"goal":"payment_made","value":{amount}.0,"currency":"MXN"}}"#)
                    })
                };
                let Some(value) = value else { continue };
                let times = if n.is_multiple_of(5) { 2 } else { 1 };
                for _ in 0..times {
                    publish(row.contact.as_str().to_string(), value.clone()).await?;
                    out.records.fetch_add(1, Ordering::Relaxed);
                }
                out.repeats.fetch_add(times - 1, Ordering::Relaxed);
                let counter = if is_cart {
                    &out.purchases
                } else {
                    &out.payments
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            if is_cart {
                seen_carts = rows.len() as u64;
            }
        }
        if open == 0 && seen_carts >= carts {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Credited to nobody: contacts no campaign reached, and a campaign
    // that declares no goal.
    for phone in ORPHANS {
        publish(
            phone.to_string(),
            r#"{"goal":"payment_made","value":100.0,"currency":"MXN"}"#.into(),
        )
        .await?;
    }
    publish(
        ORPHANS[0].to_string(),
        r#"{"goal":"payment_made","campaign_id":"bday-2026-11"}"#.into(),
    )
    .await?;
    out.orphans
        .fetch_add(ORPHANS.len() as u64 + 1, Ordering::Relaxed);
    // Unreadable: a value without its currency.
    publish(
        ORPHANS[1].to_string(),
        r#"{"goal":"payment_made","value":100.0}"#.into(),
    )
    .await?;
    out.unreadable.fetch_add(1, Ordering::Relaxed);
    out.records
        .fetch_add(ORPHANS.len() as u64 + 2, Ordering::Relaxed);
    out.finished.store(true, Ordering::Release);
    Ok(())
}

/// One cart reminder in three is followed by its purchase: half of them
/// name the campaign and the cart, half leave it to attribution (the
/// contact's latest reminder within the goal's window).
fn cart_purchase(campaign: &str, row: &DispatchRecord, n: u64) -> Option<String> {
    let occurrence = row.contact.occurrence()?;
    let cart: u64 = occurrence.rsplit('-').next()?.parse().ok()?;
    if !(n + cart).is_multiple_of(3) {
        return None;
    }
    let total = 300 + 50 * cart;
    Some(if (n + cart).is_multiple_of(2) {
        format!(
            r#"{{"goal":"purchase","campaign_id":"{campaign}","occurrence":"{occurrence}","value":{total}.0,"currency":"MXN"}}"#
        )
    } else {
        format!(r#"{{"goal":"purchase","value":{total}.0,"currency":"MXN"}}"#)
    })
}

fn digits(contact: &str) -> u64 {
    contact
        .bytes()
        .filter(u8::is_ascii_digit)
        .fold(0u64, |n, b| {
            n.wrapping_mul(10).wrapping_add(u64::from(b - b'0'))
        })
}

async fn all_rows(store: &dyn Store, campaign: &str) -> anyhow::Result<Vec<DispatchRecord>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .scan_dispatches(campaign, after.as_ref(), 2_000)
            .await?;
        let full = page.len() == 2_000;
        after = page.last().map(|r| r.contact.clone());
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}
