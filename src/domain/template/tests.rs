use std::collections::BTreeMap;

use super::compile::is_language_code;
use super::*;
use crate::domain::{ContactKey, ContactValues};

/// A contact's values, owned (an audience record's, in the daemon).
struct Record {
    variables: BTreeMap<String, String>,
    phone: Option<String>,
    name: Option<String>,
}

impl<'a> From<&'a Record> for ContactValues<'a> {
    fn from(r: &'a Record) -> ContactValues<'a> {
        ContactValues {
            variables: &r.variables,
            phone: r.phone.as_deref(),
            name: r.name.as_deref(),
            timezone: None,
            user_id: None,
            tags: &crate::domain::NO_TAGS,
        }
    }
}

fn record(vars: &[(&str, &str)]) -> Record {
    Record {
        variables: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        phone: Some("+5215512345678".into()),
        name: Some("María".into()),
    }
}

fn phone() -> ContactKey {
    ContactKey::raw("+5215512345678")
}

fn spec(json: &str) -> TemplateSpec {
    serde_json::from_str(json).unwrap()
}

fn texts(params: &FrozenParams) -> Vec<String> {
    params
        .body
        .iter()
        .map(|p| match &p.kind {
            ParamKind::Text(t) => t.clone(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn expression_parsing() {
    let e = Expr::parse("Hola {{name}}, code {{ coupon }}!").unwrap();
    assert_eq!(
        e.parts(),
        [
            ExprPart::Literal("Hola ".into()),
            ExprPart::Var(VarRef::Auto("name".into())),
            ExprPart::Literal(", code ".into()),
            ExprPart::Var(VarRef::Auto("coupon".into())),
            ExprPart::Literal("!".into()),
        ]
    );
    assert_eq!(e.to_string(), "Hola {{name}}, code {{coupon}}!");
    assert_eq!(
        Expr::parse("{{contact.name}}{{variables.x}}")
            .unwrap()
            .parts(),
        [
            ExprPart::Var(VarRef::Contact(ContactField::Name)),
            ExprPart::Var(VarRef::Variable("x".into())),
        ]
    );
    assert_eq!(
        Expr::parse("plain").unwrap().constant().as_deref(),
        Some("plain")
    );
    assert_eq!(Expr::parse("").unwrap().parts(), []);
}

#[test]
fn expression_errors_name_the_expression() {
    let cases = [
        ("Hola {{name", "\"Hola {{name\" has a {{ without a closing }}"),
        ("{{}}", "\"{{}}\" has an empty placeholder"),
        ("a {{   }} b", "\"a {{   }} b\" has an empty placeholder"),
        ("{name}}", "\"{name}}\" has a }} without an opening {{"),
        (
            "{{first name}}",
            "\"{{first name}}\": placeholder name \"first name\" may contain only letters, digits, '_', '-' and '.'",
        ),
        (
            "{{contact.email}}",
            "\"{{contact.email}}\": contact has no field \"email\" (expected phone, name, timezone or user_id)",
        ),
    ];
    for (source, message) in cases {
        assert_eq!(
            Expr::parse(source).unwrap_err().to_string(),
            message,
            "{source:?}"
        );
    }
}

#[test]
fn positional_rendering_with_literals() {
    let t = spec(
        r#"{"name":"promo","language":"es_MX","body":["{{name}}","Hola {{name}}, usa {{coupon}}","20%"]}"#,
    );
    let frozen = t
        .compile()
        .unwrap()
        .freeze(&record(&[("name", "Ana"), ("coupon", "ANA20")]), &phone())
        .unwrap();
    assert_eq!(texts(&frozen), ["Ana", "Hola Ana, usa ANA20", "20%"]);
    assert!(frozen.body.iter().all(|p| p.name.is_none()));
}

#[test]
fn named_rendering_keeps_object_order() {
    let t = spec(
        r#"{"name":"promo","language":"en","parameter_format":"named",
            "body":{"zeta":"{{amount}}","customer_name":"{{name}}","alpha":"x"}}"#,
    );
    let frozen = t
        .compile()
        .unwrap()
        .freeze(&record(&[("name", "Ana"), ("amount", "10")]), &phone())
        .unwrap();
    let names: Vec<_> = frozen
        .body
        .iter()
        .map(|p| p.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["zeta", "customer_name", "alpha"]);
    assert_eq!(texts(&frozen), ["10", "Ana", "x"]);
    // Serialising the spec keeps the order too.
    let json = serde_json::to_string(&t.body).unwrap();
    assert_eq!(
        json,
        r#"{"zeta":"{{amount}}","customer_name":"{{name}}","alpha":"x"}"#
    );
}

#[test]
fn contact_fields_are_the_fallback() {
    let t =
        spec(r#"{"name":"p","language":"en","body":["{{name}}","{{phone}}","{{contact.name}}"]}"#);
    let compiled = t.compile().unwrap();
    // No variables.name: contact.name fills {{name}}.
    let frozen = compiled.freeze(&record(&[]), &phone()).unwrap();
    assert_eq!(texts(&frozen), ["María", "+5215512345678", "María"]);
    // variables.name wins over contact.name, but not for {{contact.name}}.
    let frozen = compiled
        .freeze(&record(&[("name", "Mari")]), &phone())
        .unwrap();
    assert_eq!(texts(&frozen), ["Mari", "+5215512345678", "María"]);
    // A blank variable falls back as if absent.
    let frozen = compiled
        .freeze(&record(&[("name", "  ")]), &phone())
        .unwrap();
    assert_eq!(texts(&frozen)[0], "María");
}

#[test]
fn missing_variable_names_the_variable() {
    let t = spec(
        r#"{"name":"p","language":"en","body":["{{name}}","Code {{coupon}}"],
                    "buttons":[{"sub_type":"url","index":0,"params":["{{slug}}"]}]}"#,
    );
    let compiled = t.compile().unwrap();
    assert_eq!(
        compiled.freeze(&record(&[]), &phone()).unwrap_err(),
        MissingVariable("coupon".into())
    );
    assert_eq!(
        compiled
            .freeze(&record(&[("coupon", "")]), &phone())
            .unwrap_err(),
        MissingVariable("coupon".into())
    );
    assert_eq!(
        compiled
            .freeze(&record(&[("coupon", "X")]), &phone())
            .unwrap_err(),
        MissingVariable("slug".into())
    );
    let mut no_name = record(&[("coupon", "X"), ("slug", "s")]);
    no_name.name = None;
    assert_eq!(
        compiled.freeze(&no_name, &phone()).unwrap_err().to_string(),
        "template variable name has no value"
    );
    let explicit = spec(r#"{"name":"p","language":"en","body":["{{variables.name}}"]}"#);
    assert_eq!(
        explicit.freeze(&record(&[]), &phone()).unwrap_err(),
        MissingVariable("variables.name".into())
    );
}

#[test]
fn currency_and_date_time_params() {
    let t = spec(
        r#"{"name":"p","language":"es_MX","body":[
            {"type":"currency","fallback_value":"$10","code":"MXN","amount_1000":"{{amount_1000}}"},
            {"type":"date_time","fallback_value":"{{due_date}}"},
            {"type":"currency","fallback_value":"$5","code":"USD","amount_1000":5000},
            {"type":"text","text":"{{name}}"}]}"#,
    );
    let compiled = t.compile().unwrap();
    let frozen = compiled
        .freeze(
            &record(&[("amount_1000", "10000"), ("due_date", "22 nov 2026")]),
            &phone(),
        )
        .unwrap();
    assert_eq!(
        frozen
            .body
            .iter()
            .map(|p| p.kind.clone())
            .collect::<Vec<_>>(),
        [
            ParamKind::Currency {
                fallback_value: "$10".into(),
                code: "MXN".into(),
                amount_1000: 10000
            },
            ParamKind::DateTime {
                fallback_value: "22 nov 2026".into()
            },
            ParamKind::Currency {
                fallback_value: "$5".into(),
                code: "USD".into(),
                amount_1000: 5000
            },
            ParamKind::Text("María".into()),
        ]
    );
    // A non-integer amount cannot fill the template.
    assert_eq!(
        compiled
            .freeze(
                &record(&[("amount_1000", "ten"), ("due_date", "x")]),
                &phone()
            )
            .unwrap_err(),
        MissingVariable("amount_1000".into())
    );
    assert_eq!(compiled.variables(), ["amount_1000", "due_date", "name"]);
}

#[test]
fn unknown_parameter_type_is_a_shape_error() {
    let err = serde_json::from_str::<TemplateSpec>(
        r#"{"name":"p","language":"en","body":[{"type":"image","link":"x"}]}"#,
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "template parameter type \"image\" is not one of text, currency, date_time"
        ),
        "{err}"
    );
}

#[test]
fn header_and_buttons_freeze() {
    let t = spec(
        r#"{"name":"p","language":"en",
            "header":{"type":"document","link":"https://cdn.example/{{invoice}}.pdf","filename":"{{invoice}}.pdf"},
            "buttons":[{"sub_type":"url","index":0,"params":["{{coupon}}"]},
                       {"sub_type":"quick_reply","index":1,"params":["stop"]}]}"#,
    );
    let compiled = t.compile().unwrap();
    let frozen = compiled
        .freeze(
            &record(&[("invoice", "F-1"), ("coupon", "ANA20")]),
            &phone(),
        )
        .unwrap();
    assert_eq!(
        frozen.header,
        Some(FrozenHeader {
            kind: HeaderType::Document,
            media_id: None,
            link: Some("https://cdn.example/F-1.pdf".into()),
            filename: Some("F-1.pdf".into()),
            text_params: Vec::new(),
        })
    );
    assert_eq!(
        frozen.buttons,
        [
            FrozenButton {
                sub_type: ButtonSubType::Url,
                index: 0,
                params: vec!["ANA20".into()]
            },
            FrozenButton {
                sub_type: ButtonSubType::QuickReply,
                index: 1,
                params: vec!["stop".into()]
            },
        ]
    );
    assert_eq!(compiled.variables(), ["invoice", "coupon"]);
}

#[test]
fn frozen_params_round_trip_through_json() {
    let t = spec(
        r#"{"name":"p","language":"en","parameter_format":"named",
            "body":{"n":"{{name}}","due":{"type":"date_time","fallback_value":"tomorrow"}},
            "header":{"type":"text","text_params":["{{name}}"]}}"#,
    );
    let frozen = t.freeze(&record(&[]), &phone()).unwrap();
    let json = serde_json::to_string(&frozen).unwrap();
    assert_eq!(serde_json::from_str::<FrozenParams>(&json).unwrap(), frozen);
    assert!(!frozen.is_empty());
    assert!(FrozenParams::default().is_empty());
}

#[test]
fn text_is_cleaned_for_meta() {
    let t = spec(r#"{"name":"p","language":"en","body":["{{address}}"]}"#);
    let frozen = t
        .freeze(
            &record(&[("address", "Calle 1\nCol. Centro\t\tCDMX      MX")]),
            &phone(),
        )
        .unwrap();
    assert_eq!(texts(&frozen), ["Calle 1 Col. Centro  CDMX    MX"]);
}

#[test]
fn compile_reports_every_problem_with_its_field() {
    let t = spec(
        r#"{"name":"","language":"es-MX",
            "body":["{{name}}","Hola {{name","",{"type":"currency","code":"pesos","amount_1000":"1.5"}],
            "header":{"type":"image","media_id":"1","link":"https://x/y.png","text_params":["a"]},
            "buttons":[{"sub_type":"url","index":0,"params":[]},
                       {"sub_type":"copy_code","index":0,"params":["{{}}"]},
                       {"sub_type":"quick_reply","index":12,"params":["a"]}]}"#,
    );
    let problems: Vec<String> = t
        .compile()
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            "template.name is missing",
            "template.language: \"es-MX\" is not a WhatsApp language code (like es_MX or en)",
            "template.body[1]: \"Hola {{name\" has a {{ without a closing }}",
            "template.body[2] is missing",
            "template.body[3].code: \"pesos\" is not an ISO 4217 currency code (like MXN)",
            "template.body[3].amount_1000: \"1.5\" is not an integer (the amount times 1000)",
            "template.body[3].fallback_value is missing",
            "template.header: give media_id or link, not both",
            "template.header.text_params: only a text header takes text_params, not image",
            "template.buttons[0].params: a url button takes exactly 1 parameter, got 0",
            "template.buttons[1].index: 0 is used by another button",
            "template.buttons[1].params[0]: \"{{}}\" has an empty placeholder",
            "template.buttons[2].index: 12 is above 9, the highest button index",
        ]
    );
}

#[test]
fn body_shape_must_match_parameter_format() {
    let named_body = spec(r#"{"name":"p","language":"en","body":{"a":"{{x}}"}}"#);
    assert_eq!(
        named_body.compile().unwrap_err()[0].to_string(),
        "template.body is an object of named parameters but parameter_format is positional (set \"parameter_format\": \"named\")"
    );
    let bad_names = spec(
        r#"{"name":"p","language":"en","parameter_format":"named","body":{"Customer":"x","a":"y","a":"z"}}"#,
    );
    let problems: Vec<String> = bad_names
        .compile()
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            "template.body.Customer: parameter name \"Customer\" may contain only lowercase letters, digits and '_'",
            "template.body.a is given twice",
        ]
    );
}

#[test]
fn media_header_needs_a_source() {
    let t = spec(r#"{"name":"p","language":"en","header":{"type":"video"}}"#);
    assert_eq!(
        t.compile().unwrap_err()[0].to_string(),
        "template.header: a video header needs media_id or link"
    );
    let t = spec(r#"{"name":"p","language":"en","header":{"type":"image","link":"ftp://x"}}"#);
    assert_eq!(
        t.compile().unwrap_err()[0].to_string(),
        "template.header.link: \"ftp://x\" is not an http(s) URL"
    );
}

#[test]
fn language_codes() {
    for ok in ["en", "es_MX", "pt_BR", "zh_HK", "fil"] {
        assert!(is_language_code(ok), "{ok}");
    }
    for bad in ["es-MX", "ES", "e", "english", "es_"] {
        assert!(!is_language_code(bad), "{bad}");
    }
}
