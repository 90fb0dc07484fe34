use std::collections::HashMap;

use super::*;

fn no_templates() -> HashMap<String, TemplateSpec> {
    HashMap::new()
}

fn body(to: &str, components: &str) -> Vec<u8> {
    format!(
        r#"{{"messaging_product":"whatsapp","to":"{to}","type":"template",
           "biz_opaque_callback_data":"bday|{to}",
           "template":{{"name":"promo","language":{{"code":"es_MX"}},"components":{components}}}}}"#
    )
    .into_bytes()
}

#[test]
fn valid_template_send_keeps_what_the_sandbox_needs() {
    let b = body(
        "+52 1 55-1234-5678",
        r#"[{"type":"body","parameters":[{"type":"text","text":"María"},{"type":"text","text":"20%"}]},
            {"type":"button","sub_type":"quick_reply","index":"1","parameters":[{"type":"payload","payload":"LATER"}]},
            {"type":"button","sub_type":"quick_reply","index":0,"parameters":[{"type":"payload","payload":"YES"}]}]"#,
    );
    let v = validate_send(&b, &no_templates()).unwrap();
    assert_eq!(v.recipient.wa_id, "5215512345678");
    assert_eq!(v.input, "+52 1 55-1234-5678");
    assert_eq!(v.campaign(), "bday");
    assert_eq!(v.occurrence(), None);
    assert_eq!(v.quick_reply_payload.as_deref(), Some("YES"));
    let triggered = ValidSend {
        biz_opaque: Some("cart|+5215512345678|order #7|b".into()),
        ..v
    };
    assert_eq!(triggered.campaign(), "cart");
    assert_eq!(triggered.occurrence(), Some("order #7|b"));
}

#[test]
fn campaign_falls_back_to_template_name() {
    let b = br#"{"messaging_product":"whatsapp","to":"15550001","type":"template",
                 "template":{"name":"promo","language":{"code":"en"}}}"#;
    assert_eq!(
        validate_send(b, &no_templates()).unwrap().campaign(),
        "promo"
    );
}

#[test]
fn shape_errors_are_invalid_parameter() {
    let cases: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        br#"{"to":"15550001","type":"template"}"#.to_vec(),
        br#"{"messaging_product":"whatsapp","type":"template"}"#.to_vec(),
        br#"{"messaging_product":"whatsapp","to":"abc","type":"template"}"#.to_vec(),
        br#"{"messaging_product":"whatsapp","to":"15550001","type":"text","text":{"body":"x"}}"#.to_vec(),
        br#"{"messaging_product":"whatsapp","to":15550001,"type":"template"}"#.to_vec(),
        br#"{"messaging_product":"whatsapp","to":"15550001","type":"template","template":{"name":"","language":{"code":"en"}}}"#.to_vec(),
        br#"{"messaging_product":"whatsapp","to":"15550001","type":"template","template":{"name":"x"}}"#.to_vec(),
        body("15550001", r#"[{"type":"bogus"}]"#),
        body("15550001", r#"[{"type":"body","parameters":[{"type":"emoji","text":"x"}]}]"#),
        body("15550001", r#"[{"type":"body","parameters":[{"type":"payload","payload":"x"}]}]"#),
        body("15550001", r#"[{"type":"button","sub_type":"url","parameters":[{"type":"text","text":"x"}]}]"#),
        body("15550001", r#"[{"type":"body","parameters":"x"}]"#),
    ];
    for case in cases {
        let err = validate_send(&case, &no_templates()).unwrap_err();
        assert_eq!(
            err.code(),
            code::INVALID_PARAMETER,
            "{err} for {}",
            String::from_utf8_lossy(&case)
        );
    }
}

#[test]
fn missing_values_and_counts_have_their_own_codes() {
    let empty_text = body(
        "15550001",
        r#"[{"type":"body","parameters":[{"type":"text","text":" "}]}]"#,
    );
    assert_eq!(
        validate_send(&empty_text, &no_templates())
            .unwrap_err()
            .code(),
        code::MISSING_PARAMETER
    );
    let empty_params = body("15550001", r#"[{"type":"body","parameters":[]}]"#);
    assert_eq!(
        validate_send(&empty_params, &no_templates())
            .unwrap_err()
            .code(),
        code::PARAM_COUNT
    );

    let mut templates = HashMap::new();
    templates.insert(
        "promo".to_owned(),
        TemplateSpec {
            body_params: 2,
            paused: false,
        },
    );
    let one = body(
        "15550001",
        r#"[{"type":"body","parameters":[{"type":"text","text":"a"}]}]"#,
    );
    let err = validate_send(&one, &templates).unwrap_err();
    assert_eq!(err.code(), code::PARAM_COUNT);
    assert_eq!(
        err.to_string(),
        "template \"promo\" expects 2 body parameters, the request gives 1"
    );

    templates.insert(
        "promo".to_owned(),
        TemplateSpec {
            body_params: 1,
            paused: true,
        },
    );
    assert_eq!(
        validate_send(&one, &templates).unwrap_err().code(),
        code::TEMPLATE_PAUSED
    );
    templates.clear();
    templates.insert(
        "other".to_owned(),
        TemplateSpec {
            body_params: 1,
            paused: false,
        },
    );
    assert_eq!(
        validate_send(&one, &templates).unwrap_err().code(),
        code::TEMPLATE_MISSING
    );
}

#[test]
fn oversized_callback_data_is_refused() {
    let long = "x".repeat(MAX_BIZ_OPAQUE_BYTES + 1);
    let b = format!(
        r#"{{"messaging_product":"whatsapp","to":"15550001","type":"template","biz_opaque_callback_data":"{long}",
           "template":{{"name":"p","language":{{"code":"en"}}}}}}"#
    );
    assert_eq!(
        validate_send(b.as_bytes(), &no_templates()).unwrap_err(),
        PayloadError::BizOpaqueTooLong(513)
    );
}

#[test]
fn recipient_keys_tell_leading_zeros_apart() {
    let a = Recipient::parse("0012345678").unwrap();
    let b = Recipient::parse("012345678").unwrap();
    assert_ne!(a.key, b.key);
    assert_eq!(
        Recipient::parse("+1 (555) 000-1234").unwrap().wa_id,
        "15550001234"
    );
    assert!(Recipient::parse("123456").is_none());
    assert!(Recipient::parse("1234567890123456").is_none());
    assert!(Recipient::parse("+1555abc1234").is_none());
}

#[test]
fn failure_rules_match_by_suffix_and_stage() {
    let rules = vec![
        FailureRule {
            suffix: "13".into(),
            code: 131_026,
            stage: FailureStage::Webhook,
        },
        FailureRule {
            suffix: "48".into(),
            code: 131_048,
            stage: FailureStage::Api,
        },
    ];
    assert_eq!(webhook_failure(&rules, "15550000013"), Some(131_026));
    assert_eq!(api_failure(&rules, "15550000013"), None);
    assert_eq!(
        api_failure(&rules, "15550000048").map(|e| e.code),
        Some(131_048)
    );
    assert_eq!(webhook_failure(&rules, "15550000031"), None);
}

#[test]
fn pair_limit_allows_a_burst_then_one_per_interval() {
    let limit = PairLimit::new(6.0, 3).unwrap();
    let s = 1_000_000_000u64;
    let mut tat = 0;
    assert!(limit.admit(&mut tat, 10 * s));
    assert!(limit.admit(&mut tat, 10 * s));
    assert!(limit.admit(&mut tat, 10 * s));
    assert!(!limit.admit(&mut tat, 10 * s), "burst of 3 is spent");
    assert!(!limit.admit(&mut tat, 15 * s));
    assert!(
        limit.admit(&mut tat, 16 * s),
        "one interval later one more fits"
    );
    assert!(!limit.admit(&mut tat, 16 * s));

    let strict = PairLimit::new(6.0, 1).unwrap();
    let mut tat = 0;
    assert!(strict.admit(&mut tat, s));
    assert!(!strict.admit(&mut tat, s + 1));
    assert!(strict.admit(&mut tat, 7 * s));
    assert!(PairLimit::new(0.0, 1).is_none());
}

#[test]
fn outcomes_are_reproducible_and_follow_the_shares() {
    let shares = Shares {
        read: 0.6,
        read_without_delivered: 0.05,
        reply: 0.1,
        stop: 0.01,
        button: 0.3,
    };
    let n = 20_000u64;
    let (mut read, mut replied) = (0u64, 0u64);
    for r in 0..n {
        let key = Recipient::parse(&format!("1555{:07}", r)).unwrap().key;
        let a = decide(42, key, 1, &shares, None);
        assert_eq!(a, decide(42, key, 1, &shares, None));
        if let Outcome::Delivered {
            read: rd, reply, ..
        } = a
        {
            read += u64::from(rd);
            replied += u64::from(reply.is_some());
        }
    }
    let read_share = read as f64 / n as f64;
    let reply_share = replied as f64 / n as f64;
    // Reads include the replies (a reply implies a read).
    assert!(
        (read_share - (0.6 + 0.4 * 0.1)).abs() < 0.02,
        "read share {read_share}"
    );
    assert!(
        (reply_share - 0.1).abs() < 0.01,
        "reply share {reply_share}"
    );
    assert_eq!(
        decide(1, 2, 3, &shares, Some(131_026)),
        Outcome::Failed(131_026)
    );
}

#[test]
fn extreme_shares_are_absolute() {
    let all = Shares {
        read: 1.0,
        read_without_delivered: 1.0,
        reply: 1.0,
        stop: 0.0,
        button: 1.0,
    };
    for k in 0..100 {
        match decide(7, k, 1, &all, None) {
            Outcome::Delivered {
                delivered_status,
                read,
                reply,
            } => {
                assert!(!delivered_status && read);
                assert!(matches!(reply, Some(Reply::Button(i)) if i < BUTTON_TEXTS.len()));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A user id goes in `recipient`; `to` wins when both are set (Meta's
/// "Business-scoped user IDs"); anything else is refused with the field.
#[test]
fn a_user_id_is_sent_in_recipient() {
    let send = |envelope: &str| {
        let b = format!(
            r#"{{"messaging_product":"whatsapp",{envelope},"type":"template",
               "template":{{"name":"promo","language":{{"code":"es_MX"}}}}}}"#
        );
        validate_send(b.as_bytes(), &no_templates())
    };
    let v = send(r#""recipient":"US.13491208655302741918""#).unwrap();
    assert_eq!(v.recipient.wa_id, "");
    assert_eq!(
        v.recipient.user_id.as_deref(),
        Some("US.13491208655302741918")
    );
    assert_eq!(v.recipient.rule_key(), "US.13491208655302741918");
    let v = send(r#""to":"+15550001234","recipient":"US.1349""#).unwrap();
    assert_eq!(v.recipient.wa_id, "15550001234");
    assert_eq!(v.recipient.user_id, None);
    assert_eq!(
        send(r#""recipient":"not a user id""#).unwrap_err(),
        PayloadError::UserId("not a user id".into())
    );
    assert_eq!(
        send(r#""recipient":"""#).unwrap_err(),
        PayloadError::Required("to (or recipient)")
    );
    let a = Recipient::parse_user_id("US.1").unwrap();
    let b = Recipient::parse_user_id("US.2").unwrap();
    assert_ne!(a.key, b.key);
    assert_ne!(a.key, Recipient::parse("1234567").unwrap().key);
    assert!(Recipient::parse_user_id("US.ENT.11815799212886844830").is_some());
    assert!(Recipient::parse_user_id("us.1").is_none());
}
