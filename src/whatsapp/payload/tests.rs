use super::*;
use crate::domain::ParameterFormat;

fn spec(name: &str, language: &str) -> TemplateSpec {
    TemplateSpec {
        name: name.into(),
        language: language.into(),
        ..TemplateSpec::default()
    }
}

fn text(value: &str) -> FrozenParam {
    FrozenParam {
        name: None,
        kind: ParamKind::Text(value.into()),
    }
}

fn named(name: &str, value: &str) -> FrozenParam {
    FrozenParam {
        name: Some(name.into()),
        kind: ParamKind::Text(value.into()),
    }
}

fn media_header(kind: HeaderType) -> FrozenHeader {
    FrozenHeader {
        kind,
        media_id: None,
        link: None,
        filename: None,
        text_params: Vec::new(),
    }
}

fn fixture(json: &str) -> Value {
    serde_json::from_str(json).expect("fixture is valid JSON")
}

fn phone() -> ContactKey {
    ContactKey::raw("+5215512345678")
}

#[test]
fn positional_body() {
    let params = FrozenParams {
        body: vec![text("María"), text("20%")],
        ..FrozenParams::default()
    };
    let got = template_message(
        &spec("birthday_promo", "es_MX"),
        &phone(),
        &params,
        "bday-2026-11|+5215512345678",
    );
    let want = fixture(
        r#"{
          "messaging_product": "whatsapp",
          "recipient_type": "individual",
          "to": "+5215512345678",
          "type": "template",
          "biz_opaque_callback_data": "bday-2026-11|+5215512345678",
          "template": {
            "name": "birthday_promo",
            "language": {"code": "es_MX"},
            "components": [
              {"type": "body", "parameters": [
                {"type": "text", "text": "María"},
                {"type": "text", "text": "20%"}
              ]}
            ]
          }
        }"#,
    );
    assert_eq!(got, want);
}

#[test]
fn named_body_carries_parameter_names() {
    let template = TemplateSpec {
        parameter_format: ParameterFormat::Named,
        ..spec("order_confirmation", "en_US")
    };
    let params = FrozenParams {
        body: vec![
            named("customer_name", "Jessica"),
            named("order_number", "SKBUP2-4CPIG9"),
        ],
        ..FrozenParams::default()
    };
    let got = template_message(&template, &phone(), &params, "c|+5215512345678");
    let want = fixture(
        r#"[{"type": "body", "parameters": [
             {"type": "text", "parameter_name": "customer_name", "text": "Jessica"},
             {"type": "text", "parameter_name": "order_number", "text": "SKBUP2-4CPIG9"}
           ]}]"#,
    );
    assert_eq!(got["template"]["components"], want);
}

#[test]
fn image_header_by_media_id() {
    let params = FrozenParams {
        header: Some(FrozenHeader {
            media_id: Some("1234".into()),
            ..media_header(HeaderType::Image)
        }),
        body: vec![text("María")],
        ..FrozenParams::default()
    };
    let got = template_message(&spec("promo", "es_MX"), &phone(), &params, "c|x");
    let want = fixture(
        r#"[{"type": "header", "parameters": [{"type": "image", "image": {"id": "1234"}}]},
            {"type": "body", "parameters": [{"type": "text", "text": "María"}]}]"#,
    );
    assert_eq!(got["template"]["components"], want);
}

#[test]
fn document_header_by_link_with_filename() {
    let params = FrozenParams {
        header: Some(FrozenHeader {
            link: Some("https://example.com/invoice-77.pdf".into()),
            filename: Some("Factura 77.pdf".into()),
            ..media_header(HeaderType::Document)
        }),
        ..FrozenParams::default()
    };
    let got = template_message(&spec("invoice", "es"), &phone(), &params, "c|x");
    let want = fixture(
        r#"[{"type": "header", "parameters": [{"type": "document", "document": {
               "link": "https://example.com/invoice-77.pdf", "filename": "Factura 77.pdf"}}]}]"#,
    );
    assert_eq!(got["template"]["components"], want);
}

#[test]
fn video_and_text_headers() {
    let video = FrozenParams {
        header: Some(FrozenHeader {
            link: Some("https://example.com/clip.mp4".into()),
            ..media_header(HeaderType::Video)
        }),
        ..FrozenParams::default()
    };
    let got = template_message(&spec("clip", "en"), &phone(), &video, "c|x");
    assert_eq!(
        got["template"]["components"],
        fixture(
            r#"[{"type": "header", "parameters": [{"type": "video",
                   "video": {"link": "https://example.com/clip.mp4"}}]}]"#
        )
    );

    let text_header = FrozenParams {
        header: Some(FrozenHeader {
            text_params: vec!["Black Friday".into()],
            ..media_header(HeaderType::Text)
        }),
        ..FrozenParams::default()
    };
    let got = template_message(&spec("sale", "en"), &phone(), &text_header, "c|x");
    assert_eq!(
        got["template"]["components"],
        fixture(
            r#"[{"type": "header", "parameters": [{"type": "text", "text": "Black Friday"}]}]"#
        )
    );
}

#[test]
fn url_button() {
    let params = FrozenParams {
        buttons: vec![FrozenButton {
            sub_type: ButtonSubType::Url,
            index: 0,
            params: vec!["MARIA20".into()],
        }],
        ..FrozenParams::default()
    };
    let got = template_message(&spec("promo", "es_MX"), &phone(), &params, "c|x");
    let want = fixture(
        r#"[{"type": "button", "sub_type": "url", "index": "0",
             "parameters": [{"type": "text", "text": "MARIA20"}]}]"#,
    );
    assert_eq!(got["template"]["components"], want);
}

#[test]
fn quick_reply_button() {
    let params = FrozenParams {
        buttons: vec![FrozenButton {
            sub_type: ButtonSubType::QuickReply,
            index: 1,
            params: vec!["stop-promos".into()],
        }],
        ..FrozenParams::default()
    };
    let got = template_message(&spec("promo", "es_MX"), &phone(), &params, "c|x");
    let want = fixture(
        r#"[{"type": "button", "sub_type": "quick_reply", "index": "1",
             "parameters": [{"type": "payload", "payload": "stop-promos"}]}]"#,
    );
    assert_eq!(got["template"]["components"], want);
}

#[test]
fn copy_code_button() {
    let params = FrozenParams {
        buttons: vec![FrozenButton {
            sub_type: ButtonSubType::CopyCode,
            index: 2,
            params: vec!["SAVE25".into()],
        }],
        ..FrozenParams::default()
    };
    let got = template_message(&spec("promo", "es_MX"), &phone(), &params, "c|x");
    let want = fixture(
        r#"[{"type": "button", "sub_type": "copy_code", "index": "2",
             "parameters": [{"type": "coupon_code", "coupon_code": "SAVE25"}]}]"#,
    );
    assert_eq!(got["template"]["components"], want);
}

#[test]
fn currency_and_date_time() {
    let params = FrozenParams {
        body: vec![
            FrozenParam {
                name: None,
                kind: ParamKind::Currency {
                    fallback_value: "$100.99".into(),
                    code: "USD".into(),
                    amount_1000: 100_990,
                },
            },
            FrozenParam {
                name: Some("due_date".into()),
                kind: ParamKind::DateTime {
                    fallback_value: "February 25, 1977".into(),
                },
            },
        ],
        ..FrozenParams::default()
    };
    let got = template_message(&spec("bill", "en_US"), &phone(), &params, "c|x");
    let want = fixture(
        r#"[{"type": "body", "parameters": [
             {"type": "currency", "currency": {
                "fallback_value": "$100.99", "code": "USD", "amount_1000": 100990}},
             {"type": "date_time", "parameter_name": "due_date",
              "date_time": {"fallback_value": "February 25, 1977"}}
           ]}]"#,
    );
    assert_eq!(got["template"]["components"], want);
}

#[test]
fn everything_in_template_order() {
    let params = FrozenParams {
        header: Some(FrozenHeader {
            media_id: Some("1234".into()),
            ..media_header(HeaderType::Image)
        }),
        body: vec![text("María")],
        buttons: vec![
            FrozenButton {
                sub_type: ButtonSubType::Url,
                index: 0,
                params: vec!["MARIA20".into()],
            },
            FrozenButton {
                sub_type: ButtonSubType::QuickReply,
                index: 1,
                params: vec!["more".into()],
            },
        ],
    };
    let got = template_message(&spec("promo", "es_MX"), &phone(), &params, "c|x");
    let types: Vec<&str> = got["template"]["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| c["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(types, ["header", "body", "button", "button"]);
}

#[test]
fn empty_components_are_left_out() {
    // No variables at all: no `components` key.
    let got = template_message(
        &spec("hello_world", "en_US"),
        &phone(),
        &FrozenParams::default(),
        "c|x",
    );
    assert!(got["template"].get("components").is_none(), "{got}");

    // A text header without a variable, a media header without media
    // and a button without a parameter add nothing either.
    let params = FrozenParams {
        header: Some(media_header(HeaderType::Text)),
        body: vec![text("x")],
        buttons: vec![FrozenButton {
            sub_type: ButtonSubType::QuickReply,
            index: 0,
            params: Vec::new(),
        }],
    };
    let got = template_message(&spec("t", "en"), &phone(), &params, "c|x");
    assert_eq!(
        got["template"]["components"].as_array().map(Vec::len),
        Some(1)
    );
    let params = FrozenParams {
        header: Some(media_header(HeaderType::Image)),
        ..FrozenParams::default()
    };
    let got = template_message(&spec("t", "en"), &phone(), &params, "c|x");
    assert!(got["template"].get("components").is_none(), "{got}");
}

#[test]
fn bsuid_recipient_goes_in_recipient_not_to() {
    let user = ContactKey::raw("US.13491208655302741918");
    assert!(user.is_user_id());
    let callback = callback_data("bday-2026-11", &user);
    let params = FrozenParams {
        body: vec![text("María")],
        ..FrozenParams::default()
    };
    let got = template_message(&spec("promo", "es_MX"), &user, &params, &callback);
    let want = fixture(
        r#"{
          "messaging_product": "whatsapp",
          "recipient_type": "individual",
          "recipient": "US.13491208655302741918",
          "type": "template",
          "biz_opaque_callback_data": "bday-2026-11|US.13491208655302741918",
          "template": {
            "name": "promo",
            "language": {"code": "es_MX"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "María"}]}]
          }
        }"#,
    );
    assert_eq!(got, want);
    assert!(got.get("to").is_none());
}

#[test]
fn bytes_and_value_are_the_same_message() {
    let params = FrozenParams {
        body: vec![text("Ana \"la\" <b>"), named("n", "x\ny")],
        ..FrozenParams::default()
    };
    let template = spec("promo", "es_MX");
    let endpoint = crate::domain::Endpoint::Messages;
    let bytes = template_message_bytes(&template, &phone(), &params, "c|+5215512345678", endpoint);
    let parsed: Value = serde_json::from_slice(&bytes).expect("valid JSON");
    assert_eq!(
        parsed,
        template_message(&template, &phone(), &params, "c|+5215512345678")
    );
    assert!(parsed.get("product_policy").is_none(), "not on /messages");
}

/// The Marketing Messages API takes the same body with `product_policy`
/// (Meta's "Send marketing messages": CLOUD_API_FALLBACK by default, or
/// STRICT).
#[test]
fn a_marketing_messages_body_carries_its_product_policy() {
    let template = spec("promo", "es_MX");
    let params = FrozenParams::default();
    for (strict, policy) in [(false, "CLOUD_API_FALLBACK"), (true, "STRICT")] {
        let endpoint = crate::domain::Endpoint::MarketingMessages { strict };
        let bytes = template_message_bytes(&template, &phone(), &params, "c|x", endpoint);
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed["product_policy"], policy);
        assert_eq!(parsed["type"], "template");
        assert_eq!(parsed["messaging_product"], "whatsapp");
        assert_eq!(parsed["template"]["name"], "promo");
    }
}

#[test]
fn callback_round_trip() {
    for contact in ["+5215512345678", "US.13491208655302741918"] {
        let key = ContactKey::raw(contact);
        let data = callback_data("bday-2026-11", &key);
        assert_eq!(data, format!("bday-2026-11|{contact}"));
        assert_eq!(
            parse_callback_data(&data),
            Some(("bday-2026-11".to_string(), key))
        );
    }
    // A later journey step's message names its step; the contact is the
    // same.
    let key = ContactKey::raw("+5215512345678");
    let data = step_callback_data("bday-2026-11", "nudge", &key);
    assert_eq!(data, "bday-2026-11/nudge|+5215512345678");
    assert_eq!(
        parse_callback_data(&data),
        Some(("bday-2026-11".to_string(), key.clone()))
    );
    assert_eq!(
        step_callback_data("bday-2026-11", "", &key),
        callback_data("bday-2026-11", &key)
    );
    // A triggered campaign's row names its occurrence after the contact;
    // the occurrence may hold the separator itself.
    let row = key.with_occurrence("order #7|b");
    let data = step_callback_data("cart", "nudge", &row);
    assert_eq!(data, "cart/nudge|+5215512345678|order #7|b");
    assert_eq!(parse_callback_data(&data), Some(("cart".to_string(), row)));
    assert_eq!(parse_callback_data("c1|+1|"), None, "an empty occurrence");
}

#[test]
fn foreign_callback_data_is_not_ours() {
    for data in [
        "",
        "|",
        "no-separator",
        "|+5215512345678",
        "campaign|",
        "{\"a\":1}",
    ] {
        assert_eq!(parse_callback_data(data), None, "{data:?}");
    }
}
