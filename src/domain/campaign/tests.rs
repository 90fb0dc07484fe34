#[test]
fn unknown_fields_are_problems_naming_their_path() {
    let json = br#"{"id":"c","senders":["1"],"template":{"name":"t","language":"es","bodyy":[],
        "buttons":[{"sub_type":"url","index":0,"params":[],"label":"x"}]},
        "schedule":{"start":"2099-01-01T09:00:00"},"pacing":{"per_minute":5},"colour":"red"}"#;
    let Err(SpecError::Invalid { problems, .. }) = CampaignSpec::from_json_validated(json) else {
        panic!("an unknown field must be refused");
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    for f in [
        "colour",
        "schedule.start",
        "pacing.per_minute",
        "template.bodyy",
        "template.buttons[0].label",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    let start = problems
        .iter()
        .find(|p| p.field == "schedule.start")
        .unwrap();
    assert!(
        start.message.contains("did you mean start_at?"),
        "{}",
        start.message
    );
}

#[test]
fn slow_drips_down_to_one_an_hour_and_no_faster_than_the_senders() {
    let spec = |pacing: &str, senders: &str| {
        format!(
            r#"{{"id":"c","senders":{senders},"template":{{"name":"t","language":"es"}},"pacing":{pacing}}}"#
        )
    };
    assert!(
        CampaignSpec::from_json_validated(spec(r#"{"per_hour":1}"#, r#"["1"]"#).as_bytes()).is_ok()
    );
    assert!(
        CampaignSpec::from_json_validated(spec(r#"{"per_hour":0.5}"#, r#"["1"]"#).as_bytes())
            .is_err()
    );
    assert!(CampaignSpec::from_json_validated(
        spec(r#"{"per_second":1000}"#, r#"["1"]"#).as_bytes()
    )
    .is_ok());
    assert!(CampaignSpec::from_json_validated(
        spec(r#"{"per_second":1500}"#, r#"["1"]"#).as_bytes()
    )
    .is_err());
    assert!(CampaignSpec::from_json_validated(
        spec(r#"{"per_second":1500}"#, r#"["1","2"]"#).as_bytes()
    )
    .is_ok());
}

use super::super::template::{BodyParams, HeaderType, ParamSpec};
use super::*;

/// A full example spec: every top-level field present.
const EXAMPLE_SPEC: &str = r#"{
  "id": "bday-2026-11", "name": "Birthday promo November", "kind": "real",
  "state": "active",
  "senders": ["106540352242922"],
  "template": {"name": "birthday_promo", "language": "es_MX", "category": "marketing",
           "body": ["{{name}}", "{{discount}}"],
           "header": {"type": "image", "media_id": "1234"},
           "buttons": [{"sub_type": "url", "index": 0, "params": ["{{coupon}}"]}]},
  "schedule": {"start_at": "2026-11-22T09:00:00", "timezone": "America/Mexico_City",
           "end_at": null, "quiet_hours": {"from": "21:00", "to": "08:00"}},
  "pacing": {"per_second": 20},
  "exclusive": true,
  "reply_routing": {"agent": "collections-agent"},
  "tags": ["bday", "promo"]
}"#;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn t(s: &str) -> NaiveTime {
    NaiveTime::parse_from_str(s, "%H:%M").unwrap()
}

#[test]
fn design_example_parses_and_validates() {
    let spec = CampaignSpec::from_json(EXAMPLE_SPEC.as_bytes()).unwrap();
    assert_eq!(spec.id, "bday-2026-11");
    assert_eq!(spec.name, "Birthday promo November");
    assert_eq!(spec.kind, CampaignKind::Real);
    assert_eq!(spec.state, DesiredState::Active);
    assert_eq!(spec.senders, ["106540352242922"]);
    assert_eq!(spec.template.name, "birthday_promo");
    assert_eq!(
        spec.template.body,
        BodyParams::Positional(vec![
            ParamSpec::Text("{{name}}".into()),
            ParamSpec::Text("{{discount}}".into())
        ])
    );
    assert_eq!(
        spec.template.header.as_ref().map(|h| h.kind),
        Some(HeaderType::Image)
    );
    assert_eq!(spec.template.buttons.len(), 1);
    assert_eq!(spec.schedule.timezone(), chrono_tz::America::Mexico_City);
    assert_eq!(spec.schedule.end_at, None);
    assert_eq!(spec.pacing.rate_per_second(), 20.0);
    assert!(spec.exclusive);
    assert_eq!(
        spec.reply_routing,
        Some(ReplyRouting {
            agent: "collections-agent".into()
        })
    );
    assert_eq!(spec.tags, ["bday", "promo"]);
    assert_eq!(spec.validate(), Ok(()));
    let compiled = spec.compile().unwrap();
    assert_eq!(compiled.variables(), ["name", "discount", "coupon"]);
}

#[test]
fn defaults_and_unknown_fields() {
    let spec = CampaignSpec::from_json(
        br#"{"id":"c1","senders":["1"],"template":{"name":"t","language":"en"},"extra":{"x":1}}"#,
    )
    .unwrap();
    assert_eq!(spec.name, "");
    assert_eq!(spec.kind, CampaignKind::Real);
    assert_eq!(spec.state, DesiredState::Active);
    assert!(spec.exclusive);
    assert_eq!(spec.pacing.rate_per_second(), DEFAULT_RATE_PER_SECOND);
    assert_eq!(spec.schedule.timezone(), Tz::UTC);
    assert_eq!(spec.schedule.start_utc(), None);
    assert_eq!(spec.validate(), Ok(()));
    // Serialising and reading back gives the same spec.
    let json = serde_json::to_vec(&spec).unwrap();
    assert_eq!(CampaignSpec::from_json(&json).unwrap(), spec);
}

#[test]
fn test_kind_and_desired_states() {
    let spec = CampaignSpec::from_json(br#"{"id":"c","kind":"test","state":"paused"}"#).unwrap();
    assert_eq!(spec.kind, CampaignKind::Test);
    assert_eq!(spec.state, DesiredState::Paused);
    let err = CampaignSpec::from_json(br#"{"id":"c","state":"running"}"#).unwrap_err();
    assert!(
        err.to_string().contains("unknown variant `running`")
            && err.to_string().contains("line 1 column"),
        "{err}"
    );
}

#[test]
fn test_recipients_belong_to_test_campaigns_and_must_parse() {
    let problems = |json: &str| -> Vec<String> {
        CampaignSpec::from_json(json.as_bytes())
            .unwrap()
            .validate()
            .err()
            .unwrap_or_default()
            .iter()
            .map(|p| p.to_string())
            .filter(|p| p.starts_with("test_recipients"))
            .collect()
    };
    let base = r#""id":"c","senders":["1"],"template":{"name":"t","language":"es"}"#;
    assert_eq!(
        problems(&format!(r#"{{{base},"kind":"test"}}"#)),
        ["test_recipients: a test campaign sends only to the phones or user ids it lists here; list at least one"]
    );
    assert_eq!(
        problems(&format!(
            r#"{{{base},"test_recipients":["+525512345678"]}}"#
        )),
        ["test_recipients is for test campaigns; set \"kind\": \"test\" or remove it"]
    );
    assert_eq!(
        problems(&format!(
            r#"{{{base},"kind":"test","test_recipients":["55 1234 5678","+52 55 1234 5678","+525512345678"]}}"#
        )),
        [
            "test_recipients[0]: \"55 1234 5678\" is neither a phone number in international form (+52 55 1234 5678) nor a user id",
            "test_recipients[2]: \"+525512345678\" is listed twice",
        ]
    );
    assert!(problems(&format!(
        r#"{{{base},"kind":"test","test_recipients":["+52 55 1234 5678","US.1349"]}}"#
    ))
    .is_empty());
}

#[test]
fn json_errors_name_line_and_column() {
    let err = CampaignSpec::from_json(b"{\"id\": \"c\",\n  \"senders\": [}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "campaign spec is not valid: expected value at line 2 column 15"
    );
}

#[test]
fn validate_reports_every_problem_with_its_field() {
    let spec = CampaignSpec::from_json(
        br#"{"id":"bad id!","senders":["106540352242922","abc"],
            "template":{"name":"","language":"","body":["{{name"]},
            "schedule":{"timezone":"Mars/Base","start_at":"tomorrow","end_at":"2026-01-01T00:00:00",
                        "quiet_hours":{"from":"9pm","to":"08:00"}},
            "pacing":{"per_second":0,"per_hour":100},
            "reply_routing":{"agent":""}}"#,
    )
    .unwrap();
    let problems: Vec<String> = spec
        .validate()
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            "id: \"bad id!\" may contain only letters, digits, '.', '_' and '-'",
            "senders[1]: \"abc\" is not a numeric phone_number_id",
            "template.name is missing",
            "template.language is missing",
            "template.body[0]: \"{{name\" has a {{ without a closing }}",
            "schedule.timezone: \"Mars/Base\" is not an IANA timezone",
            "schedule.start_at: \"tomorrow\" is not a datetime (expected 2026-11-22T09:00:00)",
            "schedule.quiet_hours.from: \"9pm\" is not HH:MM (like 21:00)",
            "pacing: give per_second or per_hour, not both",
            "pacing.per_second: must be > 0, got 0",
            "reply_routing.agent is missing",
        ]
    );
}

#[test]
fn validate_senders_ids_and_window() {
    let spec = CampaignSpec::from_json(
        br#"{"id":"","senders":[],"template":{"name":"t","language":"en"},
            "schedule":{"start_at":"2026-11-22T09:00:00","end_at":"2026-11-21T09:00:00",
                        "quiet_hours":{"from":"21:00","to":"21:00"}},
            "pacing":{"per_hour":-5}}"#,
    )
    .unwrap();
    let problems: Vec<String> = spec
        .validate()
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            "id is missing",
            "senders: at least one phone_number_id is required",
            "schedule.end_at is before schedule.start_at",
            "schedule.quiet_hours: from and to are equal; give a window or no quiet_hours",
            "pacing.per_hour: must be > 0, got -5",
        ]
    );
    let long = CampaignSpec {
        id: "x".repeat(129),
        senders: vec!["1".into(), "1".into()],
        ..spec.clone()
    };
    let problems = long.validate().unwrap_err();
    assert_eq!(problems[0].field, "id");
    assert!(problems[0]
        .message
        .ends_with("is longer than 128 characters"));
    assert_eq!(problems[1].to_string(), "senders[1]: \"1\" is listed twice");
}

#[test]
fn from_json_validated_joins_problems() {
    let err = CampaignSpec::from_json_validated(
        br#"{"id":"c1","template":{"name":"t","language":"en"}}"#,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "campaign c1: senders: at least one phone_number_id is required"
    );
    assert!(CampaignSpec::from_json_validated(EXAMPLE_SPEC.as_bytes()).is_ok());
}

#[test]
fn start_at_in_mexico_city_is_utc_minus_six() {
    let spec = CampaignSpec::from_json(EXAMPLE_SPEC.as_bytes()).unwrap();
    // Mexico City has had no DST since 2022: UTC-6 all year.
    assert_eq!(spec.schedule.start_utc(), Some(utc("2026-11-22T15:00:00Z")));
    assert_eq!(spec.schedule.end_utc(), None);
}

#[test]
fn schedule_time_formats() {
    let mx = chrono_tz::America::Mexico_City;
    let expected = Some(utc("2026-11-22T15:00:00Z"));
    assert_eq!(parse_local_datetime("2026-11-22T09:00", mx), expected);
    assert_eq!(parse_local_datetime("2026-11-22 09:00:00", mx), expected);
    assert_eq!(
        parse_local_datetime("2026-11-22T09:00:00.000", mx),
        expected
    );
    // An explicit offset wins over the campaign timezone.
    assert_eq!(
        parse_local_datetime("2026-11-22T09:00:00-05:00", mx),
        Some(utc("2026-11-22T14:00:00Z"))
    );
    assert_eq!(
        parse_local_datetime("2026-11-22T15:00:00Z", Tz::UTC),
        expected
    );
    assert_eq!(parse_local_datetime("22/11/2026 09:00", mx), None);
    assert_eq!(parse_local_datetime("", mx), None);
}

#[test]
fn dst_fold_takes_the_earlier_instant_and_gap_shifts_forward() {
    let madrid = chrono_tz::Europe::Madrid;
    // 2026-10-25 03:00 CEST → 02:00 CET: 02:30 happens twice.
    assert_eq!(
        parse_local_datetime("2026-10-25T02:30:00", madrid),
        Some(utc("2026-10-25T00:30:00Z"))
    );
    // 2026-03-29 02:00 CET → 03:00 CEST: 02:30 never happens; it is 03:30.
    assert_eq!(
        parse_local_datetime("2026-03-29T02:30:00", madrid),
        Some(utc("2026-03-29T01:30:00Z"))
    );
    assert_eq!(
        utc("2026-03-29T01:30:00Z")
            .with_timezone(&madrid)
            .format("%H:%M")
            .to_string(),
        "03:30"
    );
}

#[test]
fn quiet_hours_crossing_midnight() {
    let quiet = QuietHours {
        from: "21:00".into(),
        to: "08:00".into(),
    };
    assert_eq!(quiet.parse(), (t("21:00"), t("08:00")));
    assert!(quiet.is_quiet(t("21:00")));
    assert!(quiet.is_quiet(t("23:59")));
    assert!(quiet.is_quiet(t("00:00")));
    assert!(quiet.is_quiet(t("07:59")));
    assert!(!quiet.is_quiet(t("08:00")));
    assert!(!quiet.is_quiet(t("12:00")));
    assert!(!quiet.is_quiet(t("20:59")));
}

#[test]
fn quiet_hours_within_a_day_and_invalid() {
    let lunch = QuietHours {
        from: "13:00".into(),
        to: "15:00".into(),
    };
    assert!(lunch.is_quiet(t("14:00")));
    assert!(!lunch.is_quiet(t("15:00")));
    assert!(!lunch.is_quiet(t("12:59")));
    let broken = QuietHours {
        from: "late".into(),
        to: "08:00".into(),
    };
    assert!(!broken.is_quiet(t("03:00")));
    assert!(parse_hhmm("9:05").is_none());
    assert!(parse_hhmm("24:00").is_none());
}

#[test]
fn quiet_hours_on_the_recipient_clock() {
    let spec = CampaignSpec::from_json(EXAMPLE_SPEC.as_bytes()).unwrap();
    // 04:00 UTC is 22:00 in Mexico City (quiet) and 05:00 in Madrid (quiet),
    // 10:00 UTC is 04:00 in Mexico City (quiet) and 11:00 in Madrid (not).
    let madrid = Some(chrono_tz::Europe::Madrid);
    assert!(spec.schedule.is_quiet_at(utc("2026-11-23T04:00:00Z"), None));
    assert!(spec.schedule.is_quiet_at(utc("2026-11-23T10:00:00Z"), None));
    assert!(!spec
        .schedule
        .is_quiet_at(utc("2026-11-23T10:00:00Z"), madrid));
    assert!(!spec.schedule.is_quiet_at(utc("2026-11-23T18:00:00Z"), None));
}

#[test]
fn pacing_rates() {
    let per_hour = Pacing {
        per_second: None,
        per_hour: Some(7200.0),
    };
    assert_eq!(per_hour.rate_per_second(), 2.0);
    let per_second = Pacing {
        per_second: Some(80.0),
        per_hour: None,
    };
    assert_eq!(per_second.rate_per_second(), 80.0);
    assert_eq!(Pacing::default().rate_per_second(), 20.0);
}
