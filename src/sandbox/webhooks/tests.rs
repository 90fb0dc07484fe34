use super::*;

fn settings() -> Settings {
    Settings {
        url: String::new(),
        secret: b"s".to_vec(),
        waba_id: "waba".into(),
        display_phone_number: "15550000000".into(),
        status_delay: Duration::ZERO,
        flush_every: Duration::from_millis(10),
        batch_max: 50,
        lanes: 1,
        queue_capacity: 10,
        max_attempts: 1,
        retry_base: Duration::ZERO,
        timeout: Duration::from_secs(1),
        nonce: 0xab,
    }
}

#[test]
fn signature_is_hmac_sha256_hex() {
    // RFC 4231 test case 2.
    assert_eq!(
        signature(b"Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn steps_follow_the_outcome() {
    let full = Outcome::Delivered {
        delivered_status: true,
        read: true,
        reply: Some(Reply::Stop),
    };
    let (s, n) = steps(&full);
    assert_eq!(
        &s[..n],
        &[
            Some(Step::Sent),
            Some(Step::Delivered),
            Some(Step::Read),
            Some(Step::Reply(Reply::Stop))
        ]
    );
    let skip = Outcome::Delivered {
        delivered_status: false,
        read: true,
        reply: None,
    };
    let (s, n) = steps(&skip);
    assert_eq!(&s[..n], &[Some(Step::Sent), Some(Step::Read)]);
    let (s, n) = steps(&Outcome::Failed(131_026));
    assert_eq!(&s[..n], &[Some(Step::Failed(131_026))]);
}

#[test]
fn envelope_groups_statuses_by_number_and_puts_replies_apart() {
    let stats = Stats::new([]);
    let number = stats.number("106540352242922", None);
    let message = Arc::new(MessageInfo {
        wamid: "wamid.X".into(),
        wa_id: "15551234567".into(),
        user_id: None,
        recipient_key: 1,
        biz_opaque: Some("c1|+15551234567".into()),
        quick_reply_payload: Some("YES".into()),
        number,
        category: crate::sandbox::PricingCategory::Utility,
    });
    let ev = |step, inbound_seq| Event {
        message: Arc::clone(&message),
        step,
        timestamp: 1_700_000_000,
        inbound_seq,
    };
    let batch = vec![
        ev(Step::Sent, 0),
        ev(Step::Read, 0),
        ev(Step::Reply(Reply::Button(0)), 7),
        ev(Step::Failed(131_050), 0),
    ];
    let v: serde_json::Value = serde_json::from_slice(&envelope(&batch, &settings())).unwrap();
    assert_eq!(v["object"], "whatsapp_business_account");
    let changes = v["entry"][0]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2);
    let statuses = changes[0]["value"]["statuses"].as_array().unwrap();
    let kinds: Vec<_> = statuses
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["sent", "read", "failed"]);
    assert_eq!(statuses[0]["timestamp"], "1700000000");
    assert_eq!(statuses[0]["recipient_id"], "15551234567");
    assert_eq!(statuses[0]["biz_opaque_callback_data"], "c1|+15551234567");
    assert_eq!(statuses[2]["errors"][0]["code"], 131_050);
    assert!(statuses[2]["errors"][0]["error_data"]["details"].is_string());
    assert_eq!(
        changes[0]["value"]["metadata"]["phone_number_id"],
        "106540352242922"
    );
    let reply = &changes[1]["value"];
    assert_eq!(reply["contacts"][0]["wa_id"], "15551234567");
    let m = &reply["messages"][0];
    assert_eq!(m["type"], "button");
    assert_eq!(m["button"]["payload"], "YES");
    assert_eq!(m["context"]["id"], "wamid.X");
    assert_eq!(m["id"], "wamid.in.000000ab.7");
}

/// Meta's shapes for a user known by user id only (Business-scoped user
/// ids, June 2026): statuses carry `recipient_user_id` and no
/// `recipient_id`; a reply has `from_user_id`, no `from`, and a contact
/// with `user_id`, a username and no `wa_id`. A phone with a user id
/// reports both, except on a failed status.
#[test]
fn user_ids_are_reported_as_meta_does() {
    let stats = Stats::new([]);
    let number = stats.number("106540352242922", None);
    let info = |wa_id: &str, user_id: &str| {
        Arc::new(MessageInfo {
            wamid: "wamid.U".into(),
            wa_id: wa_id.into(),
            user_id: Some(user_id.into()),
            recipient_key: 9,
            biz_opaque: None,
            quick_reply_payload: None,
            number: Arc::clone(&number),
            category: crate::sandbox::PricingCategory::Marketing,
        })
    };
    let ev = |message: &Arc<MessageInfo>, step| Event {
        message: Arc::clone(message),
        step,
        timestamp: 1_700_000_000,
        inbound_seq: 1,
    };
    let only = info("", "US.13491208655302741918");
    let batch = vec![
        ev(&only, Step::Delivered),
        ev(&only, Step::Reply(Reply::Text(0))),
    ];
    let v: serde_json::Value = serde_json::from_slice(&envelope(&batch, &settings())).unwrap();
    let changes = v["entry"][0]["changes"].as_array().unwrap();
    let status = &changes[0]["value"]["statuses"][0];
    assert_eq!(status["recipient_user_id"], "US.13491208655302741918");
    assert!(status.get("recipient_id").is_none());
    let reply = &changes[1]["value"];
    assert!(reply["contacts"][0].get("wa_id").is_none());
    assert_eq!(reply["contacts"][0]["user_id"], "US.13491208655302741918");
    assert!(reply["contacts"][0]["profile"]["username"].is_string());
    let m = &reply["messages"][0];
    assert!(m.get("from").is_none());
    assert_eq!(m["from_user_id"], "US.13491208655302741918");

    let both = info("15551234567", "ZZ.00000000000000000042");
    let batch = vec![ev(&both, Step::Sent), ev(&both, Step::Failed(131_026))];
    let v: serde_json::Value = serde_json::from_slice(&envelope(&batch, &settings())).unwrap();
    let statuses = &v["entry"][0]["changes"][0]["value"]["statuses"];
    assert_eq!(statuses[0]["recipient_id"], "15551234567");
    assert_eq!(statuses[0]["recipient_user_id"], "ZZ.00000000000000000042");
    assert_eq!(statuses[1]["recipient_id"], "15551234567");
    assert!(statuses[1].get("recipient_user_id").is_none());
}
