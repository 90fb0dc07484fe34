//! Property tests: whatever Meta (or anyone holding the app secret) posts,
//! and whatever an upstream writes to the audience topic, the daemon answers
//! or rejects it and never panics (a panic aborts the process in release).

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};
use wadispatch::domain::{stage, AudienceRecord};
use wadispatch::ingest::catalog::CampaignCatalog;
use wadispatch::store::embedded::{Durability, EmbeddedStore};
use wadispatch::store::Store;
use wadispatch::webhook::{signature, Verdict, WebhookProcessor, WebhookSettings};

const SECRET: &str = "fuzz-secret";

/// Any JSON scalar, including the values that broke parsers before: huge
/// and negative numbers, floats, numeric strings near i64's limits.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN", |f| f.is_finite())
            .prop_map(Value::from),
        any::<i64>().prop_map(|n| Value::from(n.to_string())),
        prop_oneof![
            Just("8210266876799"),
            Just("9223372036854775807"),
            Just("-9223372036854775808"),
            Just(""),
            Just("sent")
        ]
        .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ]
}

/// A value that is sometimes a scalar and sometimes an array or object.
fn anything() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn status() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just(json!("wamid.F1")), scalar()],
        prop_oneof![Just(json!("sent")), Just(json!("delivered")), Just(json!("failed")), scalar()],
        scalar(),
        prop_oneof![Just(json!("bday-2026-11|+525512345678")), scalar()],
        prop_oneof![Just(json!([])), Just(json!([{"code": 131049}])), anything()],
    )
        .prop_map(|(id, status, timestamp, callback, errors)| {
            json!({"id": id, "status": status, "timestamp": timestamp, "recipient_id": "525512345678",
                   "biz_opaque_callback_data": callback, "errors": errors})
        })
}

fn message() -> impl Strategy<Value = Value> {
    (scalar(), scalar(), anything(), anything()).prop_map(|(from, timestamp, text, context)| {
        json!({"from": from, "id": "wamid.in", "timestamp": timestamp, "type": "text",
               "text": {"body": text}, "context": context})
    })
}

fn envelope() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(status(), 0..4),
        prop::collection::vec(message(), 0..3),
        prop::collection::vec(anything(), 0..2),
    )
        .prop_map(|(statuses, messages, prefs)| {
            json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
                {"field": "messages", "value": {"statuses": statuses, "messages": messages, "user_preferences": prefs}}]}]})
        })
}

fn processor(dir: &std::path::Path) -> WebhookProcessor {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir, Durability::Process, 4).unwrap());
    let catalog = CampaignCatalog::default();
    catalog.insert(
        CampaignCatalog::parse("bday-2026-11", wadispatch::demo::PROMO_SPEC.as_bytes()).unwrap(),
    );
    WebhookProcessor::new(
        store,
        None,
        catalog,
        WebhookSettings {
            app_secret: Some(SECRET.into()),
            verify_token: None,
            opt_out_keywords: vec!["STOP".into()],
            keyword_scope: wadispatch::domain::OptOutScope::All,
            reply_context_wait: std::time::Duration::ZERO,
            marketing_limit_retry: Default::default(),
            sms_reports: None,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn signed_webhooks_never_panic(body in envelope()) {
        let dir = tempfile::tempdir().unwrap();
        let p = processor(dir.path());
        let bytes = serde_json::to_vec(&body).unwrap();
        let sig = signature::sign(SECRET.as_bytes(), &bytes);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let verdict = rt.block_on(p.handle(&bytes, Some(&sig)));
        // Items that do not parse are rejected alone: the POST as a whole
        // is applied (a failed store would be a 500, not seen here).
        prop_assert!(matches!(verdict, Verdict::Ok), "{verdict:?} for {body}");
    }

    #[test]
    fn arbitrary_webhook_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let p = processor(dir.path());
        let sig = signature::sign(SECRET.as_bytes(), &bytes);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _ = rt.block_on(p.handle(&bytes, Some(&sig)));
    }

    #[test]
    fn audience_records_decode_or_fail_cleanly(
        phone in prop_oneof![Just(json!("+525512345678")), scalar()],
        name in scalar(),
        variables in anything(),
        send_after in scalar(),
        timezone in scalar(),
        key in prop::option::of(prop::collection::vec(any::<u8>(), 0..24)),
    ) {
        let record = json!({"campaign_id": "bday-2026-11",
            "contact": {"phone": phone, "name": name, "timezone": timezone},
            "variables": variables, "send_after": send_after});
        let bytes = serde_json::to_vec(&record).unwrap();
        let entry = CampaignCatalog::parse("bday-2026-11", wadispatch::demo::PROMO_SPEC.as_bytes()).unwrap();
        if let Ok(record) = AudienceRecord::from_json(&bytes) {
            let _ = stage(&entry.spec, &entry.template, key.as_deref(), &record, Some("MX"));
        }
    }

    #[test]
    fn arbitrary_audience_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = AudienceRecord::from_json(&bytes);
    }
}

/// The status that ended the process: a 131049 failure (deferred a day)
/// dated at the edge of the calendar. Rejected alone; the other applies.
#[test]
fn a_deferral_dated_at_the_end_of_time_is_rejected_alone() {
    let dir = tempfile::tempdir().unwrap();
    let p = processor(dir.path());
    let body = serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {"statuses": [
        {"id": "wamid.X", "status": "failed", "timestamp": "8210266876799", "recipient_id": "525512345678",
         "biz_opaque_callback_data": "bday-2026-11|+525512345678", "errors": [{"code": 131049}]},
        {"id": "wamid.Y", "status": "sent", "timestamp": 1790000000, "recipient_id": "525512345679"}
    ]}}]}]}))
    .unwrap();
    let sig = signature::sign(SECRET.as_bytes(), &body);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(matches!(
        rt.block_on(p.handle(&body, Some(&sig))),
        Verdict::Ok
    ));
}
