//! Store conformance suite: written once against the `Store` trait and run on
//! every backend. The embedded backend always runs; other backends join here
//! when their test server is configured.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use wadispatch::domain::{
    ContactKey, DispatchState, ExclusionReason, FrequencyCap, FrozenParams, ObservedState,
    OptOutScope, SlotTake,
};
use wadispatch::store::embedded::{Durability, EmbeddedStore};
use wadispatch::store::*;

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 15, 0, 0).unwrap()
}

fn contact(n: u32) -> ContactKey {
    ContactKey::raw(format!("+52155{n:08}"))
}

fn req(campaign: &str, n: u32, shard: u32, seq: u64) -> StageRequest {
    StageRequest {
        campaign_id: campaign.into(),
        contact: contact(n),
        shard,
        seq,
        params: FrozenParams::default(),
        exclusion: None,
        send_after: None,
        timezone: None,
        tags: vec!["vip".into()],
        name: Some(format!("Contact {n}")),
        staged_at: t0(),
        journey: Default::default(),
    }
}

fn claim_req(campaign: &str, n: u32, exclusive: bool) -> ClaimRequest {
    ClaimRequest {
        campaign_id: campaign.into(),
        contact: contact(n),
        exclusive,
        replace_engagement: None,
        owner: "test".into(),
        now: t0(),
        step: String::new(),
    }
}

/// Runs every conformance check against one backend. Each check uses its
/// own campaign ids, so they share one store.
async fn conformance(store: Arc<dyn Store>) {
    staging_is_idempotent(store.as_ref()).await;
    exclusions_are_recorded_and_not_pending(store.as_ref()).await;
    pending_scan_is_ordered_per_shard_and_paged(store.as_ref()).await;
    claim_is_a_compare_and_set(store.as_ref()).await;
    concurrent_claims_have_one_winner(store.clone()).await;
    engagement_is_exclusive(store.as_ref()).await;
    outcomes_and_wamid_index(store.as_ref()).await;
    late_answers_never_move_a_row_back(store.as_ref()).await;
    requeue_takes_back_unknown_and_chosen_failures(store.as_ref()).await;
    deferred_is_claimable_only_when_due(store.as_ref()).await;
    campaigns_round_trip(store.as_ref()).await;
    halts_persist_until_lifted(store.as_ref()).await;
    learned_facts_are_kept_per_kind(store.as_ref()).await;
    parked_replies_wait_once_each(store.as_ref()).await;
    dispatch_scan_pages_through_everything(store.as_ref()).await;
    opt_out_round_trip(store.as_ref()).await;
    identities_are_linked_and_kept_apart(store.as_ref()).await;
    claims_of_lapsed_owners_are_settled_from_the_index(store.as_ref()).await;
    the_portfolio_window_counts_each_recipient_once_up_to_its_limit(store.clone()).await;
    journey_rows_keep_their_steps_and_timers(store.as_ref()).await;
    timers_fire_in_due_order_once_each(store.as_ref()).await;
    send_slots_cap_each_contact_across_sends(store.clone()).await;
    occurrences_are_rows_of_their_own(store.as_ref()).await;
    a_cancel_stops_the_pending_occurrence_or_comes_first(store.as_ref()).await;
    a_cancel_and_a_claim_of_one_occurrence_have_one_winner(store.clone()).await;
    conversions_are_recorded_once_and_reach_is_indexed(store.as_ref()).await;
}

fn owned_claim(campaign: &str, n: u32, owner: &str) -> ClaimRequest {
    ClaimRequest {
        owner: owner.into(),
        ..claim_req(campaign, n, false)
    }
}

/// (contact number, owner) of the claim index of one shard, sorted.
async fn index_of(store: &dyn Store, campaign: &str, shard: u32) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = store
        .claimed(campaign, shard)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.contact.to_string(), e.owner))
        .collect();
    v.sort();
    v
}

/// The claim index follows every way in and out of `claimed`, and only a
/// claim still held by a lapsed owner is settled. Times are injected: the
/// store compares none of them with its own clock.
async fn claims_of_lapsed_owners_are_settled_from_the_index(store: &dyn Store) {
    use wadispatch::dispatch::lease::lapsed;
    let c = "c-lease";
    store
        .stage_batch(&[
            req(c, 1, 0, 1),
            req(c, 2, 0, 2),
            req(c, 3, 0, 3),
            req(c, 4, 1, 4),
            req(c, 5, 0, 5),
            req(c, 6, 0, 6),
        ])
        .await
        .unwrap();
    for (n, owner) in [
        (1, "a/1"),
        (2, "b/2"),
        (3, "a/1"),
        (4, "a/1"),
        (5, "a/1"),
        (6, "a/1"),
    ] {
        assert!(matches!(
            store.claim(&owned_claim(c, n, owner)).await.unwrap(),
            ClaimOutcome::Claimed { .. }
        ));
    }
    let name = |n: u32| contact(n).to_string();
    assert_eq!(
        index_of(store, c, 0).await,
        vec![
            (name(1), "a/1".into()),
            (name(2), "b/2".into()),
            (name(3), "a/1".into()),
            (name(5), "a/1".into()),
            (name(6), "a/1".into()),
        ]
    );
    assert_eq!(index_of(store, c, 1).await, vec![(name(4), "a/1".into())]);
    let entry = store.claimed(c, 1).await.unwrap().remove(0);
    assert_eq!(entry.claimed_at, t0(), "the claim's time is kept");
    // A failed second claim of a claimed row leaves its entry alone.
    assert!(matches!(
        store.claim(&owned_claim(c, 1, "b/2")).await.unwrap(),
        ClaimOutcome::NotClaimable { .. }
    ));
    // Out of `claimed`: an answer, a retry, a status that overtook the answer.
    let at = t0() + Duration::seconds(1);
    store
        .record_outcome(
            c,
            &contact(3),
            &Outcome::Accepted {
                wamid: "wamid.LEASE3".into(),
                sender: None,
                held: None,
            },
            at,
        )
        .await
        .unwrap();
    store
        .record_outcome(
            c,
            &contact(5),
            &Outcome::Retry {
                code: None,
                not_before: None,
            },
            at,
        )
        .await
        .unwrap();
    let delivered = StatusUpdate {
        state: DispatchState::Delivered,
        at,
        wamid: Some("wamid.LEASE6".into()),
        error_code: None,
        error_class: None,
        error_message: None,
        defer_until: None,
        deferral: None,
        pricing: None,
    };
    store
        .apply_status(c, &contact(6), &delivered)
        .await
        .unwrap();
    assert_eq!(
        index_of(store, c, 0).await,
        vec![(name(1), "a/1".into()), (name(2), "b/2".into())]
    );
    // A re-claim after the retry is indexed again, under its new owner.
    store.claim(&owned_claim(c, 5, "b/2")).await.unwrap();
    assert!(index_of(store, c, 0)
        .await
        .contains(&(name(5), "b/2".into())));

    // Leases: a/1 renews, b/2 stops cleanly.
    for owner in ["a/1", "b/2"] {
        store
            .renew_lease(&Lease {
                owner: owner.into(),
                until: t0() + Duration::seconds(15),
            })
            .await
            .unwrap();
    }
    store
        .renew_lease(&Lease {
            owner: "a/1".into(),
            until: t0() + Duration::seconds(20),
        })
        .await
        .unwrap();
    store.release_lease("b/2").await.unwrap();
    let leases = store.leases().await.unwrap();
    assert_eq!(
        leases
            .iter()
            .filter(|l| l.owner == "a/1")
            .map(|l| l.until)
            .collect::<Vec<_>>(),
        vec![t0() + Duration::seconds(20)],
        "a renewal replaces the lease"
    );
    assert!(!leases.iter().any(|l| l.owner == "b/2"), "released");
    assert!(!lapsed(&leases, "a/1", t0() + Duration::seconds(24)));
    assert!(lapsed(&leases, "a/1", t0() + Duration::seconds(26)));
    assert!(lapsed(&leases, "b/2", t0()));

    let msg = "claimed by an instance that stopped";
    let settle_at = t0() + Duration::seconds(30);
    for entry in store.claimed(c, 0).await.unwrap() {
        if lapsed(&leases, &entry.owner, t0() + Duration::seconds(10)) {
            assert!(store
                .settle_claim(c, 0, &entry, msg, settle_at)
                .await
                .unwrap());
        }
    }
    let row = store.get_dispatch(c, &contact(2)).await.unwrap().unwrap();
    assert_eq!(row.state, DispatchState::Unknown);
    assert_eq!(row.error_message.as_deref(), Some(msg));
    assert_eq!(
        store
            .get_dispatch(c, &contact(5))
            .await
            .unwrap()
            .unwrap()
            .state,
        DispatchState::Unknown,
        "b/2's re-claim of contact 5 was b/2's too"
    );
    assert_eq!(
        store
            .get_dispatch(c, &contact(1))
            .await
            .unwrap()
            .unwrap()
            .state,
        DispatchState::Claimed,
        "a/1's lease is live"
    );
    assert_eq!(index_of(store, c, 0).await, vec![(name(1), "a/1".into())]);
    // An entry whose row moved on, or went to another owner, changes no row
    // and goes from the index.
    let stale = ClaimEntry {
        contact: contact(3),
        owner: "a/1".into(),
        claimed_at: t0(),
    };
    assert!(!store
        .settle_claim(c, 0, &stale, msg, settle_at)
        .await
        .unwrap());
    let not_b = ClaimEntry {
        contact: contact(1),
        owner: "b/2".into(),
        claimed_at: t0(),
    };
    assert!(!store
        .settle_claim(c, 0, &not_b, msg, settle_at)
        .await
        .unwrap());
    assert_eq!(
        store
            .get_dispatch(c, &contact(1))
            .await
            .unwrap()
            .unwrap()
            .state,
        DispatchState::Claimed
    );
    assert_eq!(
        store
            .get_dispatch(c, &contact(3))
            .await
            .unwrap()
            .unwrap()
            .state,
        DispatchState::Accepted
    );

    assert!(!store.marker("claim-index/c-lease").await.unwrap());
    store.set_marker("claim-index/c-lease").await.unwrap();
    assert!(store.marker("claim-index/c-lease").await.unwrap());
}

/// Unique recipients per rolling 24 h, with injected times: a recipient
/// counts once, a full window names when its first place frees, places free
/// 24 h after they were taken, and concurrent counts never pass the limit.
async fn the_portfolio_window_counts_each_recipient_once_up_to_its_limit(store: Arc<dyn Store>) {
    let who = |n: u32| ContactKey::raw(format!("+52166{n:08}"));
    let h = Duration::hours;
    let count = |n: u32, at| {
        let store = store.clone();
        async move { store.count_recipient(&who(n), at, 3).await.unwrap() }
    };
    assert_eq!(count(1, t0()).await, RecipientCount::Counted);
    assert_eq!(count(1, t0() + h(1)).await, RecipientCount::Known);
    assert_eq!(count(2, t0() + h(1)).await, RecipientCount::Counted);
    assert_eq!(count(3, t0() + h(2)).await, RecipientCount::Counted);
    assert_eq!(count(2, t0() + h(3)).await, RecipientCount::Known);
    assert_eq!(
        count(4, t0() + h(3)).await,
        RecipientCount::Full {
            until: t0() + h(24)
        }
    );
    // Recipient 1's day is over: its place goes to 4, and 1 itself is new
    // again (and must wait for 2's place).
    let later = t0() + h(24) + Duration::seconds(1);
    assert_eq!(count(4, later).await, RecipientCount::Counted);
    assert_eq!(
        count(1, later).await,
        RecipientCount::Full {
            until: t0() + h(25)
        }
    );
    assert_eq!(count(4, later).await, RecipientCount::Known);

    // Twenty contacts at once against a fresh window of 5 (a day later,
    // every earlier place has freed).
    let fresh = t0() + h(72);
    let racers = (100..120u32).map(|n| {
        let store = store.clone();
        tokio::spawn(async move { store.count_recipient(&who(n), fresh, 5).await.unwrap() })
    });
    let outcomes = futures::future::join_all(racers).await;
    let counted = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(RecipientCount::Counted)))
        .count();
    assert_eq!(counted, 5, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Ok(RecipientCount::Counted | RecipientCount::Full { .. }))));
}

/// The frequency cap per contact, with injected times: a send takes one
/// slot (again: the same slot), a contact with every slot held is full
/// until the first frees, slots free `per` after they were taken, other
/// contacts are not touched, and concurrent sends never pass the count.
async fn send_slots_cap_each_contact_across_sends(store: Arc<dyn Store>) {
    let who = |n: u32| ContactKey::raw(format!("+52177{n:08}"));
    let cap = FrequencyCap::parse(2, "1h").unwrap();
    let m = Duration::minutes;
    let take = |n: u32, send: &'static str, at| {
        let store = store.clone();
        async move {
            store
                .take_send_slot("", &who(n), send, cap, at)
                .await
                .unwrap()
        }
    };
    assert_eq!(take(1, "promo/", t0()).await, SlotTake::Taken);
    assert_eq!(
        take(1, "promo/", t0() + m(1)).await,
        SlotTake::Known,
        "its retry"
    );
    assert_eq!(take(1, "sale/", t0() + m(10)).await, SlotTake::Taken);
    assert_eq!(
        take(1, "news/", t0() + m(20)).await,
        SlotTake::Full {
            until: t0() + m(60)
        }
    );
    assert_eq!(
        take(2, "news/", t0() + m(20)).await,
        SlotTake::Taken,
        "another contact"
    );
    // promo's hour is over: news takes its place, promo is new again.
    assert_eq!(take(1, "news/", t0() + m(60)).await, SlotTake::Taken);
    assert_eq!(
        take(1, "promo/", t0() + m(61)).await,
        SlotTake::Full {
            until: t0() + m(70)
        }
    );

    // Sixteen campaigns at once for one contact under a cap of 3.
    let three = FrequencyCap::parse(3, "1d").unwrap();
    let racers = (0..16u32).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let send = format!("race-{i}/");
            store
                .take_send_slot("", &who(9), &send, three, t0())
                .await
                .unwrap()
        })
    });
    let outcomes = futures::future::join_all(racers).await;
    let taken = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(SlotTake::Taken)))
        .count();
    assert_eq!(taken, 3, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, Ok(SlotTake::Taken | SlotTake::Full { .. }))));

    // A campaign's own cap keeps slots apart from the portfolio's: the
    // contact the portfolio holds full still has its campaign's slots, and
    // they count each occurrence (a send of its own) against that campaign.
    let one = FrequencyCap::parse(1, "1d").unwrap();
    let row = |occ: &str| who(9).with_occurrence(occ);
    let slot = |occ: &'static str| {
        let store = store.clone();
        async move {
            let send = wadispatch::domain::send_id("cart", "", &row(occ));
            store
                .take_send_slot("cart", &row(occ), &send, one, t0())
                .await
                .unwrap()
        }
    };
    assert_eq!(slot("c-1").await, SlotTake::Taken);
    assert_eq!(slot("c-1").await, SlotTake::Known, "the same occurrence");
    assert!(matches!(slot("c-2").await, SlotTake::Full { .. }));
}

async fn staging_is_idempotent(store: &dyn Store) {
    let first = req("c-idem", 1, 0, 10);
    let mut second = req("c-idem", 1, 3, 99);
    second.tags = vec!["changed".into()];
    second.name = Some("Changed".into());
    let out = store
        .stage_batch(&[first.clone(), second.clone(), req("c-idem", 2, 0, 11)])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            StageOutcome::Staged,
            StageOutcome::Duplicate,
            StageOutcome::Staged
        ]
    );
    let again = store.stage_batch(&[second]).await.unwrap();
    assert_eq!(
        again,
        vec![StageOutcome::Duplicate],
        "a replayed record changes nothing"
    );
    let row = store
        .get_dispatch("c-idem", &contact(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, DispatchState::Pending);
    assert_eq!((row.shard, row.seq), (0, 10), "first write wins");
    assert_eq!(row.tags, vec!["vip".to_string()], "parameters stay frozen");
    assert_eq!(row.name.as_deref(), Some("Contact 1"), "the name is kept");
    let pending = store.scan_pending("c-idem", 0, None, 100).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert!(store
        .scan_pending("c-idem", 3, None, 100)
        .await
        .unwrap()
        .is_empty());
}

async fn exclusions_are_recorded_and_not_pending(store: &dyn Store) {
    let mut r = req("c-excl", 1, 0, 1);
    r.exclusion = Some(ExclusionReason::MissingVariable("coupon".into()));
    let out = store
        .stage_batch(&[r, req("c-excl", 2, 0, 2)])
        .await
        .unwrap();
    assert_eq!(out, vec![StageOutcome::Excluded, StageOutcome::Staged]);
    let row = store
        .get_dispatch("c-excl", &contact(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, DispatchState::Excluded);
    assert_eq!(row.reason.as_deref(), Some("missing_variable:coupon"));
    let pending = store.scan_pending("c-excl", 0, None, 100).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|p| p.contact.clone())
            .collect::<Vec<_>>(),
        vec![contact(2)]
    );
    // Excluding a pending contact later (opt-out found at claim time):
    // the step excluded is answered ("" for the first).
    assert_eq!(
        store
            .exclude("c-excl", &contact(2), &ExclusionReason::OptedOut, t0())
            .await
            .unwrap()
            .as_deref(),
        Some("")
    );
    assert!(store
        .scan_pending("c-excl", 0, None, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .exclude("c-excl", &contact(2), &ExclusionReason::OptedOut, t0())
            .await
            .unwrap(),
        None,
        "excluding twice is a no-op"
    );
}

async fn pending_scan_is_ordered_per_shard_and_paged(store: &dyn Store) {
    // Contact keys sort opposite to staging order: the scan must follow seq.
    let items: Vec<StageRequest> = (0..50u32)
        .map(|i| req("c-scan", 1000 - i, i % 2, u64::from(i)))
        .collect();
    store.stage_batch(&items).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.scan_pending("c-scan", 0, after, 7).await.unwrap();
        assert!(page.len() <= 7);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|p| p.seq);
        seen.extend(page.into_iter().map(|p| p.seq));
    }
    let expected: Vec<u64> = (0..50).filter(|i| i % 2 == 0).collect();
    assert_eq!(seen, expected);
    let mut shards = store.campaign_shards("c-scan").await.unwrap();
    shards.sort();
    assert_eq!(shards, vec![0, 1]);
    assert_eq!(store.load_cursor("c-scan", 0).await.unwrap(), None);
    store.save_cursor("c-scan", 0, 42).await.unwrap();
    assert_eq!(store.load_cursor("c-scan", 0).await.unwrap(), Some(42));
    assert_eq!(store.load_cursor("c-scan", 1).await.unwrap(), None);
}

async fn claim_is_a_compare_and_set(store: &dyn Store) {
    store.stage_batch(&[req("c-claim", 1, 0, 1)]).await.unwrap();
    let first = store.claim(&claim_req("c-claim", 1, false)).await.unwrap();
    assert_eq!(first, ClaimOutcome::Claimed { attempts: 1 });
    let second = store.claim(&claim_req("c-claim", 1, false)).await.unwrap();
    assert_eq!(
        second,
        ClaimOutcome::NotClaimable {
            state: Some(DispatchState::Claimed)
        }
    );
    let absent = store.claim(&claim_req("c-claim", 2, false)).await.unwrap();
    assert_eq!(absent, ClaimOutcome::NotClaimable { state: None });
    assert!(
        store
            .scan_pending("c-claim", 0, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "a claimed contact leaves the queue"
    );
    let row = store
        .get_dispatch("c-claim", &contact(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.owner.as_deref(), Some("test"));
    assert_eq!(row.times.claimed, Some(t0()));
}

async fn concurrent_claims_have_one_winner(store: Arc<dyn Store>) {
    store.stage_batch(&[req("c-race", 1, 0, 1)]).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.claim(&claim_req("c-race", 1, true)).await.unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), ClaimOutcome::Claimed { .. }) {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one claimant may send");
}

async fn engagement_is_exclusive(store: &dyn Store) {
    store.stage_batch(&[req("c-ex-a", 7, 0, 1)]).await.unwrap();
    store.stage_batch(&[req("c-ex-b", 7, 0, 1)]).await.unwrap();
    store.stage_batch(&[req("c-open", 7, 0, 1)]).await.unwrap();
    assert!(matches!(
        store.claim(&claim_req("c-ex-a", 7, true)).await.unwrap(),
        ClaimOutcome::Claimed { .. }
    ));
    assert_eq!(
        store.claim(&claim_req("c-ex-b", 7, true)).await.unwrap(),
        ClaimOutcome::EngagedElsewhere {
            campaign: "c-ex-a".into()
        }
    );
    // A non-exclusive campaign neither checks nor takes the engagement.
    assert!(matches!(
        store.claim(&claim_req("c-open", 7, false)).await.unwrap(),
        ClaimOutcome::Claimed { .. }
    ));
    let c = store.get_contact(&contact(7)).await.unwrap().unwrap();
    assert_eq!(c.engaged_campaign.as_deref(), Some("c-ex-a"));
    // Once c-ex-a ended, the caller may replace its engagement.
    let mut replace = claim_req("c-ex-b", 7, true);
    replace.replace_engagement = Some("c-ex-a".into());
    assert!(matches!(
        store.claim(&replace).await.unwrap(),
        ClaimOutcome::Claimed { .. }
    ));
    let c = store.get_contact(&contact(7)).await.unwrap().unwrap();
    assert_eq!(c.engaged_campaign.as_deref(), Some("c-ex-b"));
}

async fn outcomes_and_wamid_index(store: &dyn Store) {
    store
        .stage_batch(&[
            req("c-out", 1, 0, 1),
            req("c-out", 2, 0, 2),
            req("c-out", 3, 0, 3),
        ])
        .await
        .unwrap();
    for n in 1..=3 {
        store.claim(&claim_req("c-out", n, false)).await.unwrap();
    }
    let at = t0() + Duration::seconds(1);
    store
        .record_outcome(
            "c-out",
            &contact(1),
            &Outcome::Accepted {
                wamid: "wamid.A1".into(),
                sender: Some("106540352242922".into()),
                held: Some("paused".into()),
            },
            at,
        )
        .await
        .unwrap();
    store
        .record_outcome(
            "c-out",
            &contact(2),
            &Outcome::Failed {
                code: Some(131026),
                class: "contact".into(),
                message: "not a WhatsApp user".into(),
            },
            at,
        )
        .await
        .unwrap();
    store
        .record_outcome(
            "c-out",
            &contact(3),
            &Outcome::Retry {
                code: Some(130429),
                not_before: Some(at + Duration::seconds(10)),
            },
            at,
        )
        .await
        .unwrap();
    let a = store
        .get_dispatch("c-out", &contact(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.state, a.wamid.as_deref(), a.times.accepted),
        (DispatchState::Accepted, Some("wamid.A1"), Some(at))
    );
    // The sender that sent it, and Meta's pause of the message (accepted,
    // not flowing) until a status moves it on with its pricing.
    assert_eq!(
        (a.sender.as_deref(), a.reason.as_deref()),
        (Some("106540352242922"), Some("paused"))
    );
    let sent = StatusUpdate {
        state: DispatchState::Sent,
        at: at + Duration::seconds(2),
        wamid: Some("wamid.A1".into()),
        error_code: None,
        error_class: None,
        error_message: None,
        defer_until: None,
        deferral: None,
        pricing: wadispatch::domain::Pricing::from_status(
            Some("marketing"),
            Some(true),
            Some("PMP"),
            Some("regular"),
        ),
    };
    assert!(matches!(
        store
            .apply_status("c-out", &contact(1), &sent)
            .await
            .unwrap(),
        StatusApplied::Changed { priced: true, .. }
    ));
    assert!(matches!(
        store
            .apply_status("c-out", &contact(1), &sent)
            .await
            .unwrap(),
        StatusApplied::Unchanged {
            sender: Some(_),
            ..
        }
    ));
    let a = store
        .get_dispatch("c-out", &contact(1))
        .await
        .unwrap()
        .unwrap();
    let pricing = a.pricing.clone().expect("pricing kept");
    assert_eq!(
        (
            pricing.category.as_str(),
            pricing.billable,
            a.reason.as_deref()
        ),
        ("marketing", true, None)
    );
    assert_eq!(a.sender.as_deref(), Some("106540352242922"));
    let w = store.lookup_wamid("wamid.A1").await.unwrap().unwrap();
    assert_eq!((w.campaign_id.as_str(), &w.contact), ("c-out", &contact(1)));
    assert!(store.lookup_wamid("wamid.nope").await.unwrap().is_none());
    let f = store
        .get_dispatch("c-out", &contact(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (f.state, f.error_code, f.error_class.as_deref()),
        (DispatchState::Failed, Some(131026), Some("contact"))
    );
    // A retry puts the contact back in the queue, claimable again.
    let pending = store.scan_pending("c-out", 0, None, 10).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|p| p.contact.clone())
            .collect::<Vec<_>>(),
        vec![contact(3)]
    );
    // Not before its retry time; and the released claim was not an attempt
    // (the request never left).
    let mut early = claim_req("c-out", 3, false);
    early.now = at + Duration::seconds(9);
    assert_eq!(
        store.claim(&early).await.unwrap(),
        ClaimOutcome::NotClaimable {
            state: Some(DispatchState::Pending)
        }
    );
    let mut due = claim_req("c-out", 3, false);
    due.now = at + Duration::seconds(10);
    assert_eq!(
        store.claim(&due).await.unwrap(),
        ClaimOutcome::Claimed { attempts: 1 }
    );
}

async fn requeue_takes_back_unknown_and_chosen_failures(store: &dyn Store) {
    store
        .stage_batch(&[
            req("c-rq", 1, 0, 1),
            req("c-rq", 2, 0, 2),
            req("c-rq", 3, 0, 3),
        ])
        .await
        .unwrap();
    for n in 1..=3 {
        store.claim(&claim_req("c-rq", n, false)).await.unwrap();
    }
    let at = t0() + Duration::seconds(1);
    let outcomes = [
        Outcome::Unknown {
            message: "timeout".into(),
        },
        Outcome::Failed {
            code: Some(131000),
            class: "transient".into(),
            message: "m".into(),
        },
        Outcome::Failed {
            code: Some(131026),
            class: "contact".into(),
            message: "m".into(),
        },
    ];
    for (n, o) in (1..=3).zip(outcomes.iter()) {
        store
            .record_outcome("c-rq", &contact(n), o, at)
            .await
            .unwrap();
    }
    let unknown = Requeue {
        state: DispatchState::Unknown,
        class: None,
    };
    let transient = Requeue {
        state: DispatchState::Failed,
        class: Some("transient".into()),
    };
    assert!(store.requeue("c-rq", &contact(1), &unknown).await.unwrap());
    assert!(
        !store.requeue("c-rq", &contact(1), &unknown).await.unwrap(),
        "only once"
    );
    assert!(
        !store.requeue("c-rq", &contact(2), &unknown).await.unwrap(),
        "state must match"
    );
    assert!(store
        .requeue("c-rq", &contact(2), &transient)
        .await
        .unwrap());
    assert!(
        !store
            .requeue("c-rq", &contact(3), &transient)
            .await
            .unwrap(),
        "class must match"
    );
    let pending: Vec<ContactKey> = store
        .scan_pending("c-rq", 0, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.contact)
        .collect();
    assert_eq!(pending, vec![contact(1), contact(2)]);
    assert!(matches!(
        store.claim(&claim_req("c-rq", 1, false)).await.unwrap(),
        ClaimOutcome::Claimed { .. }
    ));
}

/// A status webhook that overtook the API answer, and a recovery that ran
/// late, never move a row back (the row is no longer `claimed`).
async fn late_answers_never_move_a_row_back(store: &dyn Store) {
    store
        .stage_batch(&[req("c-late", 1, 0, 1), req("c-late", 2, 0, 2)])
        .await
        .unwrap();
    for n in 1..=2 {
        store.claim(&claim_req("c-late", n, false)).await.unwrap();
    }
    let at = t0() + Duration::seconds(1);
    let status = |state, code: Option<i64>| StatusUpdate {
        state,
        at,
        wamid: Some("wamid.L".into()),
        error_code: code,
        error_class: code.map(|_| "contact".into()),
        error_message: code.map(|_| "m".into()),
        defer_until: None,
        deferral: None,
        pricing: None,
    };
    // 1: failed by webhook first, then the API answer says accepted.
    store
        .apply_status(
            "c-late",
            &contact(1),
            &status(DispatchState::Failed, Some(131026)),
        )
        .await
        .unwrap();
    store
        .record_outcome(
            "c-late",
            &contact(1),
            &Outcome::Accepted {
                wamid: "wamid.L".into(),
                sender: None,
                held: None,
            },
            at,
        )
        .await
        .unwrap();
    let row = store
        .get_dispatch("c-late", &contact(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.state, row.wamid.as_deref()),
        (DispatchState::Failed, Some("wamid.L"))
    );
    // 2: delivered by webhook, then a recovery's unknown.
    store
        .apply_status(
            "c-late",
            &contact(2),
            &status(DispatchState::Delivered, None),
        )
        .await
        .unwrap();
    store
        .record_outcome(
            "c-late",
            &contact(2),
            &Outcome::Unknown {
                message: "late".into(),
            },
            at,
        )
        .await
        .unwrap();
    let row = store
        .get_dispatch("c-late", &contact(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, DispatchState::Delivered);
}

async fn deferred_is_claimable_only_when_due(store: &dyn Store) {
    store.stage_batch(&[req("c-defer", 1, 0, 1)]).await.unwrap();
    store.claim(&claim_req("c-defer", 1, false)).await.unwrap();
    let until = t0() + Duration::hours(24);
    store
        .record_outcome(
            "c-defer",
            &contact(1),
            &Outcome::Deferred {
                until,
                code: Some(131049),
            },
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.claim(&claim_req("c-defer", 1, false)).await.unwrap(),
        ClaimOutcome::NotClaimable {
            state: Some(DispatchState::Deferred)
        }
    );
    let mut later = claim_req("c-defer", 1, false);
    later.now = until + Duration::seconds(1);
    assert!(matches!(
        store.claim(&later).await.unwrap(),
        ClaimOutcome::Claimed { attempts: 2 }
    ));
}

async fn campaigns_round_trip(store: &dyn Store) {
    let spec = wadispatch::domain::CampaignSpec::from_json(wadispatch::demo::PROMO_SPEC.as_bytes())
        .unwrap();
    let id = spec.id.clone();
    let record = CampaignRecord {
        spec,
        observed_state: ObservedState::Scheduled,
        updated_at: t0(),
        started_at: None,
    };
    store.put_campaign(&record).await.unwrap();
    assert_eq!(
        store.get_campaign(&id).await.unwrap().as_ref(),
        Some(&record)
    );
    assert!(store
        .list_campaigns()
        .await
        .unwrap()
        .iter()
        .any(|r| r.spec.id == id));
    store
        .set_observed_state(&id, ObservedState::Active, t0())
        .await
        .unwrap();
    let active = store.get_campaign(&id).await.unwrap().unwrap();
    assert_eq!(active.observed_state, ObservedState::Active);
    assert_eq!(active.started_at, Some(t0()));
    store.stage_batch(&[req(&id, 1, 0, 1)]).await.unwrap();
    store.delete_campaign(&id).await.unwrap();
    assert!(store.get_campaign(&id).await.unwrap().is_none());
    assert!(
        store
            .get_dispatch(&id, &contact(1))
            .await
            .unwrap()
            .is_none(),
        "deleting a campaign removes its rows"
    );
    assert!(store
        .scan_pending(&id, 0, None, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn parked_replies_wait_once_each(store: &dyn Store) {
    use wadispatch::store::ParkedReply;
    let reply = |id: &str, secs: i64| ParkedReply {
        message_id: id.into(),
        wamid: format!("wamid.for.{id}"),
        message: format!(r#"{{"id":"{id}"}}"#),
        parked_at: t0() + Duration::seconds(secs),
    };
    assert!(store.parked_replies(10).await.unwrap().is_empty());
    store.park_reply(&reply("in.2", 2)).await.unwrap();
    store.park_reply(&reply("in.1", 1)).await.unwrap();
    // A redelivery keeps the first arrival's wait.
    store.park_reply(&reply("in.2", 50)).await.unwrap();
    assert_eq!(
        store.parked_replies(10).await.unwrap(),
        vec![reply("in.1", 1), reply("in.2", 2)],
        "oldest first, once each"
    );
    assert_eq!(
        store.parked_replies(1).await.unwrap(),
        vec![reply("in.1", 1)]
    );
    assert!(store.take_parked_reply("in.1").await.unwrap(), "taken once");
    assert!(!store.take_parked_reply("in.1").await.unwrap(), "not twice");
    assert_eq!(
        store.parked_replies(10).await.unwrap(),
        vec![reply("in.2", 2)]
    );
    assert!(store.take_parked_reply("in.2").await.unwrap());
}

/// What Meta told (template health, limits) is kept per kind and key,
/// replaced by a newer value, forgotten on request, and listed in key order
/// without the other kinds' facts.
async fn learned_facts_are_kept_per_kind(store: &dyn Store) {
    assert!(store.learned("template").await.unwrap().is_empty());
    store
        .set_learned(
            "template",
            "promo\u{1f}es_mx",
            Some(r#"{"status":"PAUSED"}"#),
        )
        .await
        .unwrap();
    store
        .set_learned(
            "template",
            "alpha\u{1f}en_us",
            Some(r#"{"status":"APPROVED"}"#),
        )
        .await
        .unwrap();
    store
        .set_learned("templates-other", "promo\u{1f}es_mx", Some("{}"))
        .await
        .unwrap();
    store
        .set_learned(
            "template",
            "promo\u{1f}es_mx",
            Some(r#"{"status":"APPROVED"}"#),
        )
        .await
        .unwrap();
    assert_eq!(
        store.learned("template").await.unwrap(),
        vec![
            (
                "alpha\u{1f}en_us".to_string(),
                r#"{"status":"APPROVED"}"#.to_string()
            ),
            (
                "promo\u{1f}es_mx".to_string(),
                r#"{"status":"APPROVED"}"#.to_string()
            ),
        ]
    );
    store
        .set_learned("template", "alpha\u{1f}en_us", None)
        .await
        .unwrap();
    store
        .set_learned("template", "never-known", None)
        .await
        .unwrap();
    assert_eq!(store.learned("template").await.unwrap().len(), 1);
    assert_eq!(store.learned("templates-other").await.unwrap().len(), 1);
}

async fn halts_persist_until_lifted(store: &dyn Store) {
    use wadispatch::store::CampaignHalt;
    assert_eq!(store.campaign_halt("c-halt").await.unwrap(), None);
    let halt = CampaignHalt {
        reason: "(#132001) Template name does not exist in the translation".into(),
        spec: "ab12".into(),
        at: t0(),
    };
    store
        .set_campaign_halt("c-halt", Some(&halt))
        .await
        .unwrap();
    assert_eq!(
        store.campaign_halt("c-halt").await.unwrap(),
        Some(halt.clone())
    );
    assert_eq!(
        store.campaign_halt("c-other").await.unwrap(),
        None,
        "per campaign"
    );
    let newer = CampaignHalt {
        spec: "cd34".into(),
        ..halt.clone()
    };
    store
        .set_campaign_halt("c-halt", Some(&newer))
        .await
        .unwrap();
    assert_eq!(store.campaign_halt("c-halt").await.unwrap(), Some(newer));
    store.set_campaign_halt("c-halt", None).await.unwrap();
    assert_eq!(store.campaign_halt("c-halt").await.unwrap(), None);
    store.set_campaign_halt("c-halt", None).await.unwrap();
    // Deleting a campaign deletes its halt.
    store
        .set_campaign_halt("c-halt", Some(&halt))
        .await
        .unwrap();
    store.delete_campaign("c-halt").await.unwrap();
    assert_eq!(store.campaign_halt("c-halt").await.unwrap(), None);
}

async fn dispatch_scan_pages_through_everything(store: &dyn Store) {
    let items: Vec<StageRequest> = (0..2_345u32)
        .map(|i| req("c-page", i, i % 4, u64::from(i)))
        .collect();
    store.stage_batch(&items).await.unwrap();
    store
        .stage_batch(&[req("c-page-other", 1, 0, 1)])
        .await
        .unwrap();
    let mut after: Option<ContactKey> = None;
    let mut n = 0;
    loop {
        let page = store
            .scan_dispatches("c-page", after.as_ref(), 500)
            .await
            .unwrap();
        n += page.len();
        assert!(
            page.iter().all(|r| r.campaign_id == "c-page"),
            "no rows of another campaign"
        );
        match page.last() {
            Some(last) if page.len() == 500 => after = Some(last.contact.clone()),
            _ => break,
        }
    }
    assert_eq!(n, 2_345);
}

async fn is_opted_out(store: &dyn Store) -> bool {
    store
        .get_contact(&contact(99))
        .await
        .unwrap()
        .unwrap()
        .opted_out
}

async fn marketing_out(store: &dyn Store, c: &ContactKey) -> bool {
    store
        .get_contact(c)
        .await
        .unwrap()
        .unwrap()
        .marketing_opted_out
}

/// A link is one side per call, replaces an older one, and leaves the
/// record's other cells alone; an occurrence's row key links its contact.
async fn identities_are_linked_and_kept_apart(store: &dyn Store) {
    let phone = contact(98);
    let user = ContactKey::raw("US.13491208655302741918");
    store
        .set_opt_out(&phone, OptOutScope::All, true, t0())
        .await
        .unwrap();
    store.link_contact(&phone, &user).await.unwrap();
    let r = store.get_contact(&phone).await.unwrap().unwrap();
    assert_eq!(r.linked.as_ref(), Some(&user));
    assert!(r.opted_out, "the opt-out is kept");
    assert!(
        store.get_contact(&user).await.unwrap().is_none(),
        "one side only"
    );
    store
        .link_contact(&user.with_occurrence("order-1"), &phone)
        .await
        .unwrap();
    let r = store.get_contact(&user).await.unwrap().unwrap();
    assert_eq!(r.linked.as_ref(), Some(&phone));
    assert!(!r.opted_out, "a link copies nothing by itself");
    let newer = ContactKey::raw("US.13491208655302741919");
    store.link_contact(&phone, &newer).await.unwrap();
    assert_eq!(
        store.get_contact(&phone).await.unwrap().unwrap().linked,
        Some(newer)
    );
}

async fn opt_out_round_trip(store: &dyn Store) {
    use OptOutScope::{All, Marketing};
    assert!(store.get_contact(&contact(99)).await.unwrap().is_none());
    store
        .set_opt_out(&contact(99), All, true, t0())
        .await
        .unwrap();
    let c = store.get_contact(&contact(99)).await.unwrap().unwrap();
    assert!(c.opted_out);
    assert_eq!(c.opted_out_at, Some(t0()));
    store
        .set_opt_out(&contact(99), All, false, t0() + Duration::seconds(10))
        .await
        .unwrap();
    assert!(!is_opted_out(store).await);
    // A `stop` from before the `resume`, redelivered late, changes nothing.
    store
        .set_opt_out(&contact(99), All, true, t0() + Duration::seconds(5))
        .await
        .unwrap();
    assert!(
        !is_opted_out(store).await,
        "an older stop lost to the newer resume"
    );
    store
        .set_opt_out(&contact(99), All, true, t0() + Duration::seconds(20))
        .await
        .unwrap();
    assert!(is_opted_out(store).await);
    store
        .set_opt_out(&contact(99), All, false, t0() + Duration::seconds(15))
        .await
        .unwrap();
    assert!(
        is_opted_out(store).await,
        "an older resume does not opt back in"
    );
    // Marketing-only opt-outs are apart, with their own event order.
    let m = contact(98);
    store.set_opt_out(&m, Marketing, true, t0()).await.unwrap();
    let c = store.get_contact(&m).await.unwrap().unwrap();
    assert!(c.marketing_opted_out && !c.opted_out);
    assert!(c.opted_out_of(true), "a marketing template is held");
    assert!(!c.opted_out_of(false), "a utility template still goes");
    // An `all` change older than the marketing stop is still newer than
    // nothing of its own scope: it applies, and does not touch marketing.
    store
        .set_opt_out(&m, All, false, t0() - Duration::seconds(30))
        .await
        .unwrap();
    assert!(marketing_out(store, &m).await);
    store
        .set_opt_out(&m, Marketing, false, t0() - Duration::seconds(1))
        .await
        .unwrap();
    assert!(
        marketing_out(store, &m).await,
        "an older marketing resume does not opt back in"
    );
    store
        .set_opt_out(&m, Marketing, false, t0() + Duration::seconds(1))
        .await
        .unwrap();
    let c = store.get_contact(&m).await.unwrap().unwrap();
    assert!(!c.marketing_opted_out && !c.opted_out_of(true));
    // The opt-out of everything holds marketing too.
    assert!(store
        .get_contact(&contact(99))
        .await
        .unwrap()
        .unwrap()
        .opted_out_of(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), Durability::Process, 16).unwrap());
    conformance(store.clone()).await;
    kept_counts_are_the_rows_counts(store.as_ref()).await;
    // And after a restart, from `tallies` alone.
    drop(store);
    let store = EmbeddedStore::open(dir.path(), Durability::Process, 16).unwrap();
    kept_counts_are_the_rows_counts(&store).await;
}

/// Every campaign the suite wrote to.
const SUITE_CAMPAIGNS: &[&str] = &[
    "c-1",
    "c-2",
    "c-cancel",
    "c-cancel-race",
    "c-claim",
    "c-defer",
    "c-ex-a",
    "c-ex-b",
    "c-excl",
    "c-goal",
    "c-goal-2",
    "c-halt",
    "c-idem",
    "c-kill",
    "c-late",
    "c-lease",
    "c-occ",
    "c-open",
    "c-other",
    "c-out",
    "c-page",
    "c-page-other",
    "c-race",
    "c-rq",
    "c-scan",
];

/// The counts a backend keeps with its rows (docs/ARCHITECTURE.md,
/// "Progress and counts") are those a scan of the rows gives, after every
/// operation of the suite (staging, claims, outcomes, statuses, requeues,
/// exclusions, timers, conversions, settled claims, deleted campaigns).
async fn kept_counts_are_the_rows_counts(store: &dyn Store) {
    use wadispatch::report::CampaignSummary;
    let mut counted = 0;
    for id in SUITE_CAMPAIGNS {
        assert!(
            store.tally(id).await.unwrap().is_some(),
            "the embedded store keeps counts"
        );
        let kept = CampaignSummary::compute(store, id).await.unwrap();
        let scanned = CampaignSummary::scan(store, id).await.unwrap();
        assert_eq!(kept, scanned, "campaign {id}: kept counts against a scan");
        counted += scanned.staged;
    }
    assert!(counted > 50, "the suite staged rows to count ({counted})");
}

/// The same suite against a real ScyllaDB when `WADISPATCH_TEST_SCYLLA` names
/// a node (`host:9042`). Each run uses a keyspace of its own and drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a ScyllaDB node: WADISPATCH_TEST_SCYLLA=host:9042 cargo test --test store_conformance -- --ignored"]
async fn scylla_backend_conforms() {
    use wadispatch::store::scylladb::{SchemaMode, ScyllaStore};
    // Ignored by default, so the runner lists it as skipped; asked for
    // (`--ignored`), it needs its node.
    let node = std::env::var("WADISPATCH_TEST_SCYLLA").expect(
        "WADISPATCH_TEST_SCYLLA must name a ScyllaDB node (e.g. 127.0.0.1:9042): the suite \
         needs lightweight transactions, which the in-process CQL server of \
         tests/scylla_kassandra.rs does not have",
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let keyspace = format!(
        "wadispatch_test_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000
    );
    let config = wadispatch::config::ScyllaStoreConfig {
        nodes: vec![node.clone()],
        keyspace: keyspace.clone(),
        replication_factor: 1,
        create_schema: true,
        consistency: "one".into(),
        ..Default::default()
    };
    let store = ScyllaStore::connect(&config, SchemaMode::Apply)
        .await
        .unwrap_or_else(|e| panic!("WADISPATCH_TEST_SCYLLA={node}: {e}"));
    eprintln!("running the conformance suite against ScyllaDB at {node}, keyspace {keyspace}");
    conformance(Arc::new(store.clone())).await;
    store.drop_keyspace().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backend_reopens_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path(), Durability::Power, 16).unwrap();
        store
            .stage_batch(&[req("c-reopen", 1, 2, 5)])
            .await
            .unwrap();
    }
    let store = EmbeddedStore::open(dir.path(), Durability::Process, 16).unwrap();
    let row = store
        .get_dispatch("c-reopen", &contact(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.shard, row.seq, row.state),
        (2, 5, DispatchState::Pending)
    );
}

/// Starts `kill9_child_writer` (below) in a child process on `dir`; its
/// stdout lines say `ack N` for every write the store acknowledged.
fn spawn_writer(
    dir: &std::path::Path,
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "kill9_child_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("WADISPATCH_KILL9_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

#[test]
fn embedded_store_refuses_a_second_process_on_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    // A child process holds the store open (the kill -9 writer below).
    let (mut child, mut lines) = spawn_writer(dir.path());
    // The first acknowledged write proves the child holds the store (libtest
    // prints its own banner lines first).
    loop {
        let line = lines.next().expect("child ended early").unwrap();
        if line.starts_with("ack ") {
            break;
        }
    }
    let second = EmbeddedStore::open(dir.path(), Durability::Process, 16);
    child.kill().unwrap();
    child.wait().unwrap();
    let err = second
        .err()
        .expect("a second process must not open a store in use");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
}

/// Child side of the kill -9 test: stages contacts one at a time and prints
/// each one only after the store acknowledged it. Runs only when asked to.
#[test]
#[ignore = "helper process for acknowledged_writes_survive_kill_9"]
fn kill9_child_writer() {
    let Ok(dir) = std::env::var("WADISPATCH_KILL9_DIR") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = EmbeddedStore::open(std::path::Path::new(&dir), Durability::Process, 16).unwrap();
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for n in 0.. {
        rt.block_on(store.stage_batch(&[req("c-kill", n, 0, u64::from(n))]))
            .unwrap();
        if n % 2 == 0 {
            rt.block_on(store.claim(&claim_req("c-kill", n, true)))
                .unwrap();
        }
        writeln!(out, "ack {n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut lines) = spawn_writer(dir.path());
    let mut acked = Vec::new();
    while acked.len() < 500 {
        let line = lines.next().expect("child ended early").unwrap();
        if let Some(n) = line.strip_prefix("ack ") {
            acked.push(n.parse::<u32>().unwrap());
        }
    }
    // SIGKILL: no destructor, no flush, no chance to persist anything more.
    child.kill().unwrap();
    child.wait().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = EmbeddedStore::open(dir.path(), Durability::Process, 16).unwrap();
    for n in acked {
        let row = rt
            .block_on(store.get_dispatch("c-kill", &contact(n)))
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged contact {n} lost after kill -9"));
        let expected = if n % 2 == 0 {
            DispatchState::Claimed
        } else {
            DispatchState::Pending
        };
        assert_eq!(row.state, expected, "contact {n}");
    }
}

/// A contact staged with a journey's edges leaving the primary (fallback
/// `sms` at once on failure, follow-up `nudge` after an hour of silence)
/// and the SMS texts of `later` steps.
fn journey_req(campaign: &str, n: u32, shard: u32, later: &[(&str, &str)]) -> StageRequest {
    use wadispatch::domain::{Edge, FrozenStep, On, StepParams};
    let edge = |on, delay_secs, to: &str| Edge {
        on,
        delay_secs,
        to: to.into(),
    };
    let mut r = req(campaign, n, shard, u64::from(n));
    r.journey = StagedJourney {
        next: vec![
            edge(On::Failed, 0, "sms"),
            edge(On::NoReply, 3_600, "nudge"),
        ],
        later: later
            .iter()
            .map(|(step, text)| StepParams {
                step: (*step).into(),
                content: FrozenStep::Text((*text).into()),
            })
            .collect(),
    };
    r
}

/// A reply to `wamid` at `at`, as the webhook reports it.
fn reply(wamid: &str, at: chrono::DateTime<Utc>) -> StatusUpdate {
    StatusUpdate {
        state: DispatchState::Replied,
        at,
        wamid: Some(wamid.into()),
        error_code: None,
        error_class: None,
        error_message: None,
        defer_until: None,
        deferral: None,
        pricing: None,
    }
}

/// The row of contact `n`, which must exist.
async fn row_of(store: &dyn Store, campaign: &str, n: u32) -> DispatchRecord {
    store
        .get_dispatch(campaign, &contact(n))
        .await
        .unwrap()
        .unwrap()
}

/// A journey contact staged with its edges and later steps: an accepted
/// send sets the follow-up's timer, a reply clears it, and a failure of
/// another contact sets its fallback due at once, each read back from the
/// store (the row's rules are shared; the backend must keep every cell).
async fn journey_rows_keep_their_steps_and_timers(store: &dyn Store) {
    use wadispatch::domain::Wait;
    let campaign = "journey";
    let staged = |n: u32| journey_req(campaign, n, 0, &[("sms", "hola")]);
    store.stage_batch(&[staged(1), staged(2)]).await.unwrap();
    let row = row_of(store, campaign, 1).await;
    assert_eq!(row.next, staged(1).journey.next);
    assert_eq!(row.later, staged(1).journey.later);
    assert_eq!((row.step.as_str(), row.wait.clone()), ("", None));

    for n in [1, 2] {
        assert!(matches!(
            store.claim(&claim_req(campaign, n, false)).await.unwrap(),
            ClaimOutcome::Claimed { .. }
        ));
    }
    store
        .record_outcome(
            campaign,
            &contact(1),
            &Outcome::Accepted {
                wamid: "wamid.j1".into(),
                sender: None,
                held: None,
            },
            t0(),
        )
        .await
        .unwrap();
    let row = row_of(store, campaign, 1).await;
    assert_eq!(
        row.wait,
        Some(Wait {
            step: "nudge".into(),
            due: t0() + Duration::hours(1)
        })
    );

    let reply = reply("wamid.j1", t0() + Duration::minutes(5));
    store
        .apply_status(campaign, &contact(1), &reply)
        .await
        .unwrap();
    let row = row_of(store, campaign, 1).await;
    assert_eq!(
        row.wait, None,
        "a reply cancels the follow-up, in the store"
    );
    assert_eq!(row.next, staged(1).journey.next, "the edges stay");

    let failed = Outcome::Failed {
        code: Some(131026),
        class: "recipient".into(),
        message: "not on WhatsApp".into(),
    };
    store
        .record_outcome(campaign, &contact(2), &failed, t0())
        .await
        .unwrap();
    let row = row_of(store, campaign, 2).await;
    assert_eq!(
        row.wait,
        Some(Wait {
            step: "sms".into(),
            due: t0()
        })
    );
    assert_eq!(row.sms_text(), None, "still at the primary");
}

/// The timer queue: entries by shard in due order, fired once, kept while
/// not due, dropped when the row no longer waits for them, and deleted with
/// their campaign.
async fn timers_fire_in_due_order_once_each(store: &dyn Store) {
    let campaign = "timers";
    let staged = |n: u32, shard: u32| {
        journey_req(
            campaign,
            n,
            shard,
            &[("sms", "hola"), ("nudge", "¿sigues ahí?")],
        )
    };
    store
        .stage_batch(&[staged(1, 0), staged(2, 0), staged(3, 0), staged(4, 1)])
        .await
        .unwrap();
    let drained: Vec<_> = store.scan_pending(campaign, 0, None, 10).await.unwrap();
    assert_eq!(drained.len(), 3);
    for n in 1..=4 {
        assert!(matches!(
            store.claim(&claim_req(campaign, n, false)).await.unwrap(),
            ClaimOutcome::Claimed { .. }
        ));
    }
    // 1 and 3 accepted a minute apart, 2 failed, 4 accepted on shard 1.
    let accepted = |n: u32| Outcome::Accepted {
        wamid: format!("wamid.t{n}"),
        sender: None,
        held: None,
    };
    store
        .record_outcome(
            campaign,
            &contact(3),
            &accepted(3),
            t0() + Duration::minutes(1),
        )
        .await
        .unwrap();
    store
        .record_outcome(campaign, &contact(1), &accepted(1), t0())
        .await
        .unwrap();
    let failed = Outcome::Failed {
        code: Some(131026),
        class: "recipient".into(),
        message: "x".into(),
    };
    store
        .record_outcome(campaign, &contact(2), &failed, t0())
        .await
        .unwrap();
    store
        .record_outcome(campaign, &contact(4), &accepted(4), t0())
        .await
        .unwrap();

    let due = |until| async move {
        store
            .due_timers(campaign, 0, until, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.contact.as_str().to_string(), e.step, e.due))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        due(t0()).await,
        vec![(contact(2).as_str().to_string(), "sms".to_string(), t0())]
    );
    let hour = Duration::hours(1);
    assert_eq!(
        due(t0() + hour * 2).await,
        vec![
            (contact(2).as_str().to_string(), "sms".to_string(), t0()),
            (
                contact(1).as_str().to_string(),
                "nudge".to_string(),
                t0() + hour
            ),
            (
                contact(3).as_str().to_string(),
                "nudge".to_string(),
                t0() + hour + Duration::minutes(1)
            ),
        ],
        "due order within the shard, other shards apart"
    );
    assert_eq!(
        store
            .due_timers(campaign, 0, t0() + hour * 2, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .due_timers(campaign, 1, t0() + hour * 2, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    let entries = store
        .due_timers(campaign, 0, t0() + hour * 2, 10)
        .await
        .unwrap();
    let (fallback, nudge1, nudge3) = (&entries[0], &entries[1], &entries[2]);
    // The fallback fires at once: the row is at `sms`, pending again.
    let fired = store
        .fire_timer(campaign, fallback, &[], t0(), false)
        .await
        .unwrap();
    assert_eq!(fired, Some(DispatchState::Pending));
    let row = row_of(store, campaign, 2).await;
    assert_eq!((row.step.as_str(), row.sms_text()), ("sms", Some("hola")));
    assert_eq!(row.history.len(), 1);
    let pending = store.scan_pending(campaign, 0, None, 10).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|e| e.contact.clone())
            .collect::<Vec<_>>(),
        vec![contact(2)]
    );
    assert_eq!(
        store
            .fire_timer(campaign, fallback, &[], t0(), false)
            .await
            .unwrap(),
        None,
        "once"
    );

    // Not due yet: declined and kept.
    assert_eq!(
        store
            .fire_timer(campaign, nudge3, &[], t0(), false)
            .await
            .unwrap(),
        None
    );
    assert_eq!(due(t0() + hour * 2).await.len(), 2);
    // A reply cancels 1's follow-up: its entry fires nothing and goes.
    let reply = reply("wamid.t1", t0() + Duration::minutes(5));
    store
        .apply_status(campaign, &contact(1), &reply)
        .await
        .unwrap();
    assert_eq!(
        store
            .fire_timer(campaign, nudge1, &[], t0() + hour * 2, false)
            .await
            .unwrap(),
        None
    );
    let row = row_of(store, campaign, 1).await;
    assert_eq!((row.step.as_str(), row.state), ("", DispatchState::Replied));
    assert_eq!(due(t0() + hour * 2).await.len(), 1);
    // Due: 3 moves to its follow-up.
    assert_eq!(
        store
            .fire_timer(campaign, nudge3, &[], t0() + hour * 2, false)
            .await
            .unwrap(),
        Some(DispatchState::Pending)
    );
    assert!(due(t0() + hour * 2).await.is_empty());

    // Once the campaign is deleted its timers start nothing: an entry still
    // listed (ScyllaDB deletes only rows, since a deleted campaign never
    // started and so has no waits) fires nothing and goes.
    store.delete_campaign(campaign).await.unwrap();
    for entry in store
        .due_timers(campaign, 1, t0() + hour * 2, 10)
        .await
        .unwrap()
    {
        assert_eq!(
            store
                .fire_timer(campaign, &entry, &[], t0() + hour * 2, true)
                .await
                .unwrap(),
            None
        );
    }
    assert!(store
        .due_timers(campaign, 1, t0() + hour * 2, 10)
        .await
        .unwrap()
        .is_empty());
}

/// The row of a triggered campaign's occurrence: staged, read, claimed,
/// answered and correlated under (campaign, contact, occurrence), while
/// what the store keeps per contact stays under the contact.
async fn occurrences_are_rows_of_their_own(store: &dyn Store) {
    let campaign = "c-occ";
    let of = |occ: &str| contact(41).with_occurrence(occ);
    let staged = |occ: Option<&str>, seq: u64| StageRequest {
        contact: occ.map_or_else(|| contact(41), of),
        ..req(campaign, 41, 0, seq)
    };
    let outcomes = store
        .stage_batch(&[
            staged(Some("cart-a"), 1),
            staged(Some("cart-b"), 2),
            staged(None, 3),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes, vec![StageOutcome::Staged; 3]);
    assert_eq!(
        store
            .stage_batch(&[staged(Some("cart-a"), 4)])
            .await
            .unwrap(),
        vec![StageOutcome::Duplicate],
        "the same occurrence again"
    );
    let queued: Vec<ContactKey> = store
        .scan_pending(campaign, 0, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.contact)
        .collect();
    assert_eq!(queued, vec![of("cart-a"), of("cart-b"), contact(41)]);
    let row = store
        .get_dispatch(campaign, &of("cart-b"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.contact, of("cart-b"));
    let mut everything: Vec<ContactKey> = store
        .scan_dispatches(campaign, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.contact)
        .collect();
    everything.sort();
    let mut expected = vec![contact(41), of("cart-a"), of("cart-b")];
    expected.sort();
    assert_eq!(everything, expected);
    // Paged one row at a time, the scan resumes after an occurrence's row.
    let mut after = None;
    let mut paged = 0;
    loop {
        let page = store
            .scan_dispatches(campaign, after.as_ref(), 1)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.contact.clone());
        paged += 1;
        assert!(paged <= 3, "the scan pages past every row once");
    }
    assert_eq!(paged, 3);

    let claim = ClaimRequest {
        contact: of("cart-a"),
        ..claim_req(campaign, 41, true)
    };
    assert!(matches!(
        store.claim(&claim).await.unwrap(),
        ClaimOutcome::Claimed { .. }
    ));
    // The engagement is the contact's: its other occurrence claims too (the
    // same campaign holds it), a second claim of cart-a does not.
    assert!(matches!(
        store
            .claim(&ClaimRequest {
                contact: of("cart-b"),
                ..claim.clone()
            })
            .await
            .unwrap(),
        ClaimOutcome::Claimed { .. }
    ));
    assert!(matches!(
        store.claim(&claim).await.unwrap(),
        ClaimOutcome::NotClaimable { .. }
    ));
    store
        .record_outcome(
            campaign,
            &of("cart-a"),
            &Outcome::Accepted {
                wamid: "wamid.occ-a".into(),
                sender: None,
                held: None,
            },
            t0(),
        )
        .await
        .unwrap();
    let entry = store.lookup_wamid("wamid.occ-a").await.unwrap().unwrap();
    assert_eq!(
        entry.contact,
        of("cart-a"),
        "the wamid finds the occurrence"
    );
    let person = store.get_contact(&contact(41)).await.unwrap().unwrap();
    assert_eq!(person.last_campaign.as_deref(), Some(campaign));
    assert_eq!(person.last_occurrence.as_deref(), Some("cart-a"));
    assert_eq!(person.engaged_campaign.as_deref(), Some(campaign));
    let delivered = StatusUpdate {
        state: DispatchState::Delivered,
        ..reply("wamid.occ-a", t0())
    };
    assert!(matches!(
        store
            .apply_status(campaign, &entry.contact, &delivered)
            .await
            .unwrap(),
        StatusApplied::Changed { .. }
    ));
    let b = store
        .get_dispatch(campaign, &of("cart-b"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.state, DispatchState::Claimed, "cart-b untouched");
    // An opt-out of the contact covers all its rows (it is the contact's).
    store
        .set_opt_out(&of("cart-b"), OptOutScope::All, true, t0())
        .await
        .unwrap();
    assert!(is_opted_out_contact(store, &contact(41)).await);
}

async fn is_opted_out_contact(store: &dyn Store, c: &ContactKey) -> bool {
    store
        .get_contact(c)
        .await
        .unwrap()
        .is_some_and(|r| r.opted_out)
}

/// Cancelling an occurrence: a pending one is excluded `cancelled:<event>`
/// and leaves the queue; a claimed one keeps its send but its later steps
/// stop; one with nothing left answers `None`; a cancel staged before its
/// trigger holds the row, and the trigger is then a duplicate.
async fn a_cancel_stops_the_pending_occurrence_or_comes_first(store: &dyn Store) {
    let campaign = "c-cancel";
    let of = |n: u32, occ: &str| contact(n).with_occurrence(occ);
    let reason = ExclusionReason::Cancelled("order_placed".into());
    let trigger = |n: u32, occ: &str| StageRequest {
        contact: of(n, occ),
        ..journey_req(campaign, n, 0, &[("sms", "hola")])
    };
    store
        .stage_batch(&[trigger(1, "o-1"), trigger(2, "o-2")])
        .await
        .unwrap();

    let stop = store
        .stop_journey(campaign, &of(1, "o-1"), &reason, t0())
        .await
        .unwrap();
    assert_eq!(
        stop,
        Some(JourneyStop {
            step: String::new(),
            excluded: true
        })
    );
    let row = store
        .get_dispatch(campaign, &of(1, "o-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, DispatchState::Excluded);
    assert_eq!(row.reason.as_deref(), Some("cancelled:order_placed"));
    assert_eq!(row.stopped.as_deref(), Some("cancelled:order_placed"));
    assert!(row.next.is_empty() && row.wait.is_none(), "no later step");
    let queued: Vec<ContactKey> = store
        .scan_pending(campaign, 0, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.contact)
        .collect();
    assert_eq!(
        queued,
        vec![of(2, "o-2")],
        "the cancelled one left the queue"
    );
    assert!(matches!(
        store
            .claim(&ClaimRequest {
                contact: of(1, "o-1"),
                ..claim_req(campaign, 1, false)
            })
            .await
            .unwrap(),
        ClaimOutcome::NotClaimable { .. }
    ));
    assert_eq!(
        store
            .stop_journey(campaign, &of(1, "o-1"), &reason, t0())
            .await
            .unwrap(),
        None,
        "a second cancel finds nothing left"
    );

    // Claimed and sent: the message stays, the follow-up it waits for goes.
    let claim = ClaimRequest {
        contact: of(2, "o-2"),
        ..claim_req(campaign, 2, false)
    };
    assert!(matches!(
        store.claim(&claim).await.unwrap(),
        ClaimOutcome::Claimed { .. }
    ));
    store
        .record_outcome(
            campaign,
            &of(2, "o-2"),
            &Outcome::Accepted {
                wamid: "wamid.cancel-2".into(),
                sender: None,
                held: None,
            },
            t0(),
        )
        .await
        .unwrap();
    let row = store
        .get_dispatch(campaign, &of(2, "o-2"))
        .await
        .unwrap()
        .unwrap();
    assert!(row.wait.is_some(), "the follow-up waits");
    assert_eq!(
        store
            .stop_journey(campaign, &of(2, "o-2"), &reason, t0())
            .await
            .unwrap(),
        Some(JourneyStop {
            step: String::new(),
            excluded: false
        })
    );
    let row = store
        .get_dispatch(campaign, &of(2, "o-2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.state,
        DispatchState::Accepted,
        "the message that left stays"
    );
    assert_eq!((row.wait.clone(), row.next.len()), (None, 0));
    // A status after the stop revives no step.
    let read = StatusUpdate {
        state: DispatchState::Read,
        ..reply("wamid.cancel-2", t0())
    };
    store
        .apply_status(campaign, &of(2, "o-2"), &read)
        .await
        .unwrap();
    let row = store
        .get_dispatch(campaign, &of(2, "o-2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.wait, row.next.len()), (None, 0));
    // The follow-up's timer entry, due or not, moves the row nowhere.
    for entry in store
        .due_timers(campaign, 0, t0() + Duration::days(1), 10)
        .await
        .unwrap()
    {
        let moved = store
            .fire_timer(campaign, &entry, &[], t0() + Duration::days(1), false)
            .await
            .unwrap();
        assert_eq!(moved, None, "{entry:?}");
    }
    let row = store
        .get_dispatch(campaign, &of(2, "o-2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.step.as_str(), row.state), ("", DispatchState::Read));

    // The cancel first: staged excluded, the trigger after it a duplicate.
    let cancel = StageRequest {
        contact: of(3, "o-3"),
        exclusion: Some(reason.clone()),
        ..req(campaign, 3, 0, 30)
    };
    assert_eq!(
        store.stage_batch(&[cancel]).await.unwrap(),
        vec![StageOutcome::Excluded]
    );
    assert_eq!(
        store.stage_batch(&[trigger(3, "o-3")]).await.unwrap(),
        vec![StageOutcome::Duplicate]
    );
    let row = store
        .get_dispatch(campaign, &of(3, "o-3"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, DispatchState::Excluded);
    assert_eq!(row.reason.as_deref(), Some("cancelled:order_placed"));
}

/// A cancel and a claim of the same pending occurrence at once, many
/// times over: exactly one wins each time (the claim and the stop are both
/// conditional on the row being unclaimed).
async fn a_cancel_and_a_claim_of_one_occurrence_have_one_winner(store: Arc<dyn Store>) {
    let campaign = "c-cancel-race";
    let reason = ExclusionReason::Cancelled("order_placed".into());
    let rows: Vec<StageRequest> = (0..24u32)
        .map(|i| StageRequest {
            contact: contact(1).with_occurrence(&format!("race-{i}")),
            ..req(campaign, 1, 0, u64::from(i))
        })
        .collect();
    store.stage_batch(&rows).await.unwrap();
    for row in &rows {
        let claim = ClaimRequest {
            contact: row.contact.clone(),
            ..claim_req(campaign, 1, false)
        };
        let (s1, s2) = (store.clone(), store.clone());
        let (key, why) = (row.contact.clone(), reason.clone());
        let claimed = tokio::spawn(async move { s1.claim(&claim).await.unwrap() });
        let stopped =
            tokio::spawn(async move { s2.stop_journey(campaign, &key, &why, t0()).await.unwrap() });
        let (claimed, stopped) = (claimed.await.unwrap(), stopped.await.unwrap());
        let won_claim = matches!(claimed, ClaimOutcome::Claimed { .. });
        let won_stop = stopped.as_ref().is_some_and(|s| s.excluded);
        assert!(
            won_claim != won_stop,
            "{}: claim {claimed:?}, stop {stopped:?}",
            row.contact
        );
        let state = store
            .get_dispatch(campaign, &row.contact)
            .await
            .unwrap()
            .unwrap()
            .state;
        let expected = if won_claim {
            DispatchState::Claimed
        } else {
            DispatchState::Excluded
        };
        assert_eq!(state, expected);
    }
}

/// A goal conversion is a row's once (a redelivery, or a second
/// conversion, changes nothing), stops what is left of the journey in the
/// same write when asked, and the reach index lists the latest accepted
/// message of every journey of a contact, per occurrence.
async fn conversions_are_recorded_once_and_reach_is_indexed(store: &dyn Store) {
    use wadispatch::domain::Conversion;
    let campaign = "c-goal";
    let other = "c-goal-2";
    // A contact no other check uses: the reach index is per contact.
    let n = 7_041;
    let occ = |o: &str| contact(n).with_occurrence(o);
    store
        .stage_batch(&[
            StageRequest {
                contact: occ("cart-1"),
                ..journey_req(campaign, n, 0, &[("sms", "hola")])
            },
            StageRequest {
                contact: occ("cart-2"),
                ..journey_req(campaign, n, 0, &[("sms", "hola")])
            },
            req(other, n, 0, 1),
            req(other, n + 1, 0, 2),
        ])
        .await
        .unwrap();
    assert!(store.reached(&contact(n)).await.unwrap().is_empty());
    let accept = |c: &'static str, key: ContactKey, wamid: &'static str, at| async move {
        let claim = ClaimRequest {
            contact: key.clone(),
            ..claim_req(c, n, false)
        };
        assert!(matches!(
            store.claim(&claim).await.unwrap(),
            ClaimOutcome::Claimed { .. }
        ));
        store
            .record_outcome(
                c,
                &key,
                &Outcome::Accepted {
                    wamid: wamid.into(),
                    sender: None,
                    held: None,
                },
                at,
            )
            .await
            .unwrap();
    };
    let now = Utc::now();
    accept(
        campaign,
        occ("cart-1"),
        "wamid.goal-1",
        now - Duration::hours(3),
    )
    .await;
    accept(other, contact(n), "wamid.goal-3", now - Duration::hours(1)).await;
    let mut reach = store.reached(&contact(n)).await.unwrap();
    reach.sort_by(|a, b| a.campaign_id.cmp(&b.campaign_id));
    let seen: Vec<(&str, Option<&str>)> = reach
        .iter()
        .map(|r| (r.campaign_id.as_str(), r.occurrence.as_deref()))
        .collect();
    assert_eq!(seen, [(campaign, Some("cart-1")), (other, None)]);
    assert_eq!(
        reach[0].at.timestamp_millis(),
        (now - Duration::hours(3)).timestamp_millis()
    );
    assert!(
        store.reached(&contact(n + 1)).await.unwrap().is_empty(),
        "staged, never accepted"
    );

    let paid = Conversion {
        goal: "payment_made".into(),
        at: now,
        value: Some(500.0),
        currency: Some("MXN".into()),
    };
    let reason = ExclusionReason::Converted("payment_made".into());
    // Sent with a follow-up waiting: the follow-up goes, the message stays.
    let first = store
        .record_conversion(campaign, &occ("cart-1"), &paid, Some(&reason), now)
        .await
        .unwrap();
    assert_eq!(
        first,
        Some(ConversionApplied::Recorded(Converted {
            step: String::new(),
            stopped: Some(JourneyStop {
                step: String::new(),
                excluded: false,
            }),
        }))
    );
    let row = store
        .get_dispatch(campaign, &occ("cart-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, DispatchState::Accepted);
    assert_eq!(row.conversion.as_ref(), Some(&paid));
    assert_eq!(row.stopped.as_deref(), Some("converted:payment_made"));
    assert!(row.wait.is_none() && row.next.is_empty());
    // Read again: recorded once.
    assert_eq!(
        store
            .record_conversion(campaign, &occ("cart-1"), &paid, Some(&reason), now)
            .await
            .unwrap(),
        Some(ConversionApplied::Duplicate {
            redelivered: true,
            step: String::new(),
            stopped: true,
        })
    );
    let second = Conversion {
        value: Some(10.0),
        ..paid.clone()
    };
    assert!(matches!(
        store
            .record_conversion(campaign, &occ("cart-1"), &second, Some(&reason), now)
            .await
            .unwrap(),
        Some(ConversionApplied::Duplicate {
            redelivered: false,
            ..
        })
    ));
    let row = store
        .get_dispatch(campaign, &occ("cart-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.conversion.and_then(|c| c.value), Some(500.0));

    // Pending: excluded in the same write, and out of the queue.
    assert!(matches!(
        store
            .record_conversion(campaign, &occ("cart-2"), &paid, Some(&reason), now)
            .await
            .unwrap(),
        Some(ConversionApplied::Recorded(Converted {
            stopped: Some(JourneyStop { excluded: true, .. }),
            ..
        }))
    ));
    let row = store
        .get_dispatch(campaign, &occ("cart-2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.state, row.reason.as_deref()),
        (DispatchState::Excluded, Some("converted:payment_made"))
    );
    let queued: Vec<ContactKey> = store
        .scan_pending(campaign, 0, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.contact)
        .collect();
    assert!(!queued.contains(&occ("cart-2")), "{queued:?}");
    assert!(matches!(
        store
            .claim(&ClaimRequest {
                contact: occ("cart-2"),
                ..claim_req(campaign, n, false)
            })
            .await
            .unwrap(),
        ClaimOutcome::NotClaimable { .. }
    ));

    // Without a stop: recorded, the row goes on.
    assert!(matches!(
        store
            .record_conversion(other, &contact(n + 1), &paid, None, now)
            .await
            .unwrap(),
        Some(ConversionApplied::Recorded(Converted { stopped: None, .. }))
    ));
    let row = store
        .get_dispatch(other, &contact(n + 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, DispatchState::Pending);
    assert!(row.conversion.is_some());
    // No such row.
    assert_eq!(
        store
            .record_conversion(other, &contact(n + 9), &paid, None, now)
            .await
            .unwrap(),
        None
    );
}
