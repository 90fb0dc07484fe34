//! Audience records from `wa.audience` (docs/ARCHITECTURE.md, "Kafka
//! contracts") and the pure staging decision made for each at ingest: who
//! the contact is, whether it is excluded, and the parameters frozen for it.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use super::campaign::{parse_local_datetime, parse_timezone, CampaignSpec};
use super::contact::{
    default_timezone_for_region, is_bsuid, normalize_phone_with_region, occurrence_error,
    ContactKey, ContactValues,
};
use super::state::ExclusionReason;
use super::template::{CompiledTemplate, FrozenParams};
use super::trigger::Trigger;

/// Largest audience record accepted: a contact with its variables is a few
/// hundred bytes; anything near this is a mistake or an attack, and goes to
/// the dead-letter topic instead of the store.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// One contact for one campaign. Unknown JSON fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AudienceRecord {
    /// The campaign this contact belongs to.
    #[serde(default)]
    pub campaign_id: String,
    /// Who the contact is: the object, or its phone or user id as a string.
    #[serde(default, deserialize_with = "deserialize_contact")]
    pub contact: ContactInfo,
    /// Values for template expressions; JSON numbers and booleans are kept
    /// as their text, nulls are dropped.
    #[serde(default, deserialize_with = "deserialize_variables")]
    pub variables: BTreeMap<String, String>,
    /// Labels and valued tags: for the campaign's segment (`audience`),
    /// `{{tags.<name>}}` in templates, and reports.
    #[serde(default)]
    pub tags: super::Tags,
    /// Not before this time (contact timezone, else campaign timezone, or
    /// RFC 3339).
    #[serde(default)]
    pub send_after: Option<String>,
    /// For a triggered campaign: what triggered this record (the order or
    /// cart id); one row per (campaign, contact, occurrence).
    #[serde(default, deserialize_with = "deserialize_opt_scalar")]
    pub occurrence: Option<String>,
    /// For a triggered campaign: when the event happened (RFC 3339, or
    /// local time like `send_after`); the message is due the trigger's
    /// delay after it. Absent: when the record is staged.
    #[serde(default)]
    pub event_at: Option<String>,
    /// An event of the trigger's `cancel_on` (`order_placed`): the record
    /// cancels the occurrence instead of triggering it.
    #[serde(default)]
    pub event: Option<String>,
}

/// The `contact` object of an audience record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContactInfo {
    /// Phone in any common notation; normalised to E.164 at staging.
    #[serde(default, deserialize_with = "deserialize_opt_scalar")]
    pub phone: Option<String>,
    /// Display name, also `{{name}}` when the variables have none.
    #[serde(default)]
    pub name: Option<String>,
    /// IANA timezone for quiet hours and `send_after`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Meta business-scoped user id, for contacts known without a phone.
    #[serde(default)]
    pub user_id: Option<String>,
}

impl<'a> From<&'a AudienceRecord> for ContactValues<'a> {
    fn from(r: &'a AudienceRecord) -> ContactValues<'a> {
        ContactValues {
            variables: &r.variables,
            phone: r.contact.phone.as_deref(),
            name: r.contact.name.as_deref(),
            timezone: r.contact.timezone.as_deref(),
            user_id: r.contact.user_id.as_deref(),
            tags: &r.tags.values,
        }
    }
}

/// A record that cannot be staged; it goes to the dead-letter topic with
/// this message in its `error` header.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// Not JSON, or not an object of the expected shape.
    #[error("audience record is malformed: {0}")]
    Malformed(String),
    /// `campaign_id` missing or empty.
    #[error("audience record names no campaign (campaign_id is missing or empty)")]
    NoCampaign,
    /// Bigger than [`MAX_RECORD_BYTES`].
    #[error("audience record is {0} bytes, over the limit of {MAX_RECORD_BYTES}")]
    TooLarge(usize),
}

impl AudienceRecord {
    /// Parses a record from the Kafka value.
    pub fn from_json(bytes: &[u8]) -> Result<AudienceRecord, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        // serde also reads a struct from a JSON array (by position); a
        // record must be an object.
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {}
            Some(_) => return Err(RecordError::Malformed("expected a JSON object".to_string())),
            None => return Err(RecordError::Malformed("empty value".to_string())),
        }
        let record: AudienceRecord =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Malformed(e.to_string()))?;
        if record.campaign_id.trim().is_empty() {
            return Err(RecordError::NoCampaign);
        }
        Ok(record)
    }
}

/// What ingest stores for one record.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedContact {
    /// The contact's identity (the store key).
    pub contact: ContactKey,
    /// Frozen template parameters; empty when excluded.
    pub params: FrozenParams,
    /// Why the contact will not be sent, if so.
    pub exclusion: Option<ExclusionReason>,
    /// Not before this instant.
    pub send_after: Option<DateTime<Utc>>,
    /// The recipient's IANA timezone: the record's, else the one its phone's
    /// country implies; `None` means the campaign's applies.
    pub timezone: Option<String>,
}

impl StagedContact {
    fn excluded(contact: ContactKey, reason: ExclusionReason) -> StagedContact {
        StagedContact {
            contact,
            params: FrozenParams::default(),
            exclusion: Some(reason),
            send_after: None,
            timezone: None,
        }
    }
}

/// Decides how one audience record is staged. Pure: no I/O, no clock.
///
/// Identity: the normalised `contact.phone`, else `contact.user_id`, else
/// the Kafka key (a BSUID or a phone). A phone that cannot be normalised
/// keeps its trimmed text as the key (so the report shows what was sent)
/// and excludes the contact as `invalid_phone`; so does a record with no
/// identity at all (its key is then empty). A test campaign excludes a
/// contact its `test_recipients` does not list (`not_a_test_recipient`), a
/// campaign with an `audience` one whose tags it does not take
/// (`not_in_segment`).
/// Then, in order, the first problem excludes: an unparsable `send_after` (`invalid_field:send_after`),
/// a template variable without a value (`missing_variable:<name>`).
///
/// An unknown `contact.timezone` is not an exclusion: the phone's country
/// timezone, else the campaign's, is used instead, because quiet hours
/// still protect the recipient and dropping the contact would punish a
/// formatting slip upstream.
pub fn stage(
    spec: &CampaignSpec,
    compiled: &CompiledTemplate,
    kafka_key: Option<&[u8]>,
    record: &AudienceRecord,
    default_region: Option<&str>,
) -> StagedContact {
    let (contact, region) = match identify(kafka_key, record, default_region) {
        Ok(identified) => identified,
        Err((contact, reason)) => return StagedContact::excluded(contact, reason),
    };
    if !spec.admits_test_recipient(&contact) {
        return StagedContact::excluded(contact, ExclusionReason::NotATestRecipient);
    }
    if spec
        .audience
        .as_ref()
        .is_some_and(|s| !s.admits(&record.tags))
    {
        return StagedContact::excluded(contact, ExclusionReason::NotInSegment);
    }

    let timezone = record
        .contact
        .timezone
        .as_deref()
        .and_then(parse_timezone)
        .or_else(|| region.as_deref().and_then(default_timezone_for_region));

    let send_after = match record.send_after.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => {
            let tz = timezone.unwrap_or_else(|| spec.schedule.timezone());
            match parse_local_datetime(raw, tz) {
                Some(instant) => Some(instant),
                None => {
                    let mut staged = StagedContact::excluded(
                        contact,
                        ExclusionReason::InvalidField("send_after".to_string()),
                    );
                    staged.timezone = timezone.map(|tz| tz.name().to_string());
                    return staged;
                }
            }
        }
    };

    let (params, exclusion) = match compiled.freeze(record, &contact) {
        Ok(params) => (params, None),
        Err(missing) => (
            FrozenParams::default(),
            Some(ExclusionReason::MissingVariable(missing.0)),
        ),
    };
    StagedContact {
        contact,
        params,
        exclusion,
        send_after,
        timezone: timezone.map(|tz| tz.name().to_string()),
    }
}

/// The contact's key and the ISO region of its phone, or the key to report
/// it under with its exclusion.
fn identify(
    kafka_key: Option<&[u8]>,
    record: &AudienceRecord,
    default_region: Option<&str>,
) -> Result<(ContactKey, Option<String>), (ContactKey, ExclusionReason)> {
    let present = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    if let Some(phone) = present(&record.contact.phone) {
        return normalize_phone_with_region(&phone, default_region)
            .map_err(|_| (ContactKey::raw(phone), ExclusionReason::InvalidPhone));
    }
    if let Some(user_id) = present(&record.contact.user_id) {
        return if is_bsuid(&user_id) {
            Ok((ContactKey::raw(user_id), None))
        } else {
            Err((
                ContactKey::raw(user_id),
                ExclusionReason::InvalidField("contact.user_id".to_string()),
            ))
        };
    }
    let key = kafka_key
        .map(String::from_utf8_lossy)
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty());
    match key {
        Some(key) if is_bsuid(&key) => Ok((ContactKey::raw(key), None)),
        Some(key) => normalize_phone_with_region(&key, default_region)
            .map_err(|_| (ContactKey::raw(key), ExclusionReason::InvalidPhone)),
        None => Err((ContactKey::raw(""), ExclusionReason::InvalidPhone)),
    }
}

/// What a triggered campaign's record does to its occurrence's row, after
/// [`stage`] decided the contact (docs/ARCHITECTURE.md, "Triggered
/// campaigns"). Pure: `now` is the staging time.
///
/// The row is keyed by the occurrence; a record without a usable one is
/// excluded `invalid_field:occurrence` under the contact alone. The message
/// is due at `event_at` (staging time when absent) plus the delay, or at
/// the record's `send_after` when that is later; an unreadable `event_at`
/// excludes (`invalid_field:event_at`), and so does an event older than the
/// dedupe window (`stale_event`). A cancelling record gets the exclusion
/// `cancelled:<event>`: it cancels a pending row, or is staged in its place
/// so that the trigger arriving after it finds the occurrence cancelled.
pub fn stage_occurrence(
    trigger: &Trigger,
    campaign_tz: Tz,
    record: &AudienceRecord,
    staged: &mut StagedContact,
    now: DateTime<Utc>,
) {
    let occurrence = record.occurrence.as_deref().map(str::trim);
    match occurrence {
        Some(occ) if occurrence_error(occ).is_none() => {
            staged.contact = staged.contact.with_occurrence(occ);
        }
        _ => {
            staged.exclusion = Some(ExclusionReason::InvalidField("occurrence".into()));
            return;
        }
    }
    if let Some(event) = record.event.as_deref() {
        // What the event cancels is checked by ingest (`cancels_on`).
        staged.exclusion = Some(ExclusionReason::Cancelled(event.trim().to_string()));
        staged.params = FrozenParams::default();
        return;
    }
    let tz = staged
        .timezone
        .as_deref()
        .and_then(parse_timezone)
        .unwrap_or(campaign_tz);
    let event_at = match record.event_at.as_deref().map(str::trim) {
        None | Some("") => now,
        Some(raw) => match parse_local_datetime(raw, tz) {
            Some(at) => at,
            None => {
                staged.exclusion = Some(ExclusionReason::InvalidField("event_at".into()));
                return;
            }
        },
    };
    if staged.exclusion.is_some() {
        return;
    }
    if trigger.is_stale(event_at, now) {
        staged.exclusion = Some(ExclusionReason::StaleEvent);
        return;
    }
    let due = trigger.due_at(event_at);
    staged.send_after = Some(staged.send_after.map_or(due, |after| after.max(due)));
}

/// The `contact` of a record: its object, or a phone or user id as a bare
/// string (an event record may name its contact so).
fn deserialize_contact<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ContactInfo, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Contact {
        Id(String),
        Info(ContactInfo),
        None(()),
    }
    Ok(match Contact::deserialize(deserializer)? {
        Contact::Id(id) if is_bsuid(id.trim()) => ContactInfo {
            user_id: Some(id.trim().to_string()),
            ..ContactInfo::default()
        },
        Contact::Id(phone) => ContactInfo {
            phone: Some(phone),
            ..ContactInfo::default()
        },
        Contact::Info(info) => info,
        Contact::None(()) => ContactInfo::default(),
    })
}

/// Variables: string values as they are, numbers and booleans as their JSON
/// text (CSV bridges send `"discount": 20`), nulls dropped.
fn deserialize_variables<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct VariablesVisitor;

    impl<'de> Visitor<'de> for VariablesVisitor {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of variables")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                let value: Option<ScalarText> = map.next_value()?;
                if let Some(ScalarText(value)) = value {
                    out.insert(key, value);
                }
            }
            Ok(out)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
    }

    deserializer.deserialize_any(VariablesVisitor)
}

pub(crate) fn deserialize_opt_scalar<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Ok(Option::<ScalarText>::deserialize(deserializer)?.map(|s| s.0))
}

/// A JSON string, number or boolean as text.
struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl Visitor<'_> for ScalarVisitor {
            type Value = ScalarText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<ScalarText, E> {
                Ok(ScalarText(v))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::super::template::ParamKind;
    use super::*;

    /// A full example record: every top-level field present.
    const EXAMPLE_RECORD: &str = r#"{"campaign_id": "bday-2026-11",
 "contact": {"phone": "+5215512345678", "name": "María", "timezone": null},
 "variables": {"name": "María", "discount": "20%", "coupon": "MARIA20"},
 "tags": ["vip"], "send_after": null}"#;

    const SPEC: &str = r#"{"id": "bday-2026-11", "senders": ["106540352242922"],
        "template": {"name": "birthday_promo", "language": "es_MX",
                     "body": ["{{name}}", "{{discount}}"],
                     "buttons": [{"sub_type": "url", "index": 0, "params": ["{{coupon}}"]}]},
        "schedule": {"timezone": "America/Mexico_City"}}"#;

    fn spec() -> (CampaignSpec, CompiledTemplate) {
        CampaignSpec::from_json_validated(SPEC.as_bytes()).unwrap()
    }

    fn record(json: &str) -> AudienceRecord {
        AudienceRecord::from_json(json.as_bytes()).unwrap()
    }

    fn stage_json(json: &str, key: Option<&str>, region: Option<&str>) -> StagedContact {
        let (spec, compiled) = spec();
        stage(
            &spec,
            &compiled,
            key.map(str::as_bytes),
            &record(json),
            region,
        )
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// A triggered campaign's record through `stage` and `stage_occurrence`.
    fn stage_trigger(json: &str, now: DateTime<Utc>) -> StagedContact {
        let trigger = crate::domain::TriggerSpec {
            delay: Some("1h".into()),
            dedupe_window: Some("2d".into()),
            ..Default::default()
        }
        .check()
        .unwrap();
        let mut staged = stage_json(json, None, None);
        stage_occurrence(
            &trigger,
            spec().0.schedule.timezone(),
            &record(json),
            &mut staged,
            now,
        );
        staged
    }

    #[test]
    fn a_test_campaign_stages_its_test_recipients_only() {
        let (mut spec, compiled) = spec();
        spec.kind = crate::domain::CampaignKind::Test;
        spec.test_recipients = vec!["+52 55 1234 5678".into(), "US.1349".into()];
        spec.normalize();
        assert_eq!(spec.test_recipients, ["+525512345678", "US.1349"]);
        let staged = |json: &str| stage(&spec, &compiled, None, &record(json), None);
        let listed = staged(EXAMPLE_RECORD);
        assert_eq!(listed.exclusion, None, "+52 1 55… is the listed +52 55…");
        let other = staged(
            r#"{"campaign_id": "bday-2026-11", "contact": {"phone": "+5215512340000"},
                "variables": {"name": "A", "discount": "5%", "coupon": "X"}}"#,
        );
        assert_eq!(other.exclusion, Some(ExclusionReason::NotATestRecipient));
        let by_user_id = staged(
            r#"{"campaign_id": "bday-2026-11", "contact": {"user_id": "US.1349"},
                "variables": {"name": "A", "discount": "5%", "coupon": "X"}}"#,
        );
        assert_eq!(by_user_id.exclusion, None);
    }

    const CART: &str = r#"{"campaign_id": "bday-2026-11", "contact": {"phone": "+5215512345678"},
        "variables": {"name": "A", "discount": "5%", "coupon": "X"}"#;

    #[test]
    fn each_occurrence_of_a_trigger_is_a_row_due_its_delay_after_the_event() {
        let now = utc("2026-12-01T18:00:00Z");
        let a = stage_trigger(
            &format!(r#"{CART}, "occurrence": "cart-1", "event_at": "2026-12-01T17:30:00Z"}}"#),
            now,
        );
        assert_eq!(a.exclusion, None);
        assert_eq!(a.contact.as_str(), "+525512345678");
        assert_eq!(a.contact.occurrence(), Some("cart-1"));
        assert_eq!(a.send_after, Some(utc("2026-12-01T18:30:00Z")));
        // An order id given as a number is an occurrence too; without
        // event_at the event is the staging time.
        let b = stage_trigger(&format!(r#"{CART}, "occurrence": 1001}}"#), now);
        assert_eq!(b.contact.occurrence(), Some("1001"));
        assert_ne!(a.contact, b.contact, "two occurrences, two rows");
        assert_eq!(b.send_after, Some(utc("2026-12-01T19:00:00Z")));
        // A later send_after wins over the due time.
        let later = stage_trigger(
            &format!(r#"{CART}, "occurrence": "c", "send_after": "2026-12-02T09:00:00Z"}}"#),
            now,
        );
        assert_eq!(later.send_after, Some(utc("2026-12-02T09:00:00Z")));
    }

    #[test]
    fn a_trigger_record_without_occurrence_or_in_the_past_is_excluded() {
        let now = utc("2026-12-01T18:00:00Z");
        let none = stage_trigger(&format!("{CART}}}"), now);
        assert_eq!(
            none.exclusion,
            Some(ExclusionReason::InvalidField("occurrence".into()))
        );
        assert_eq!(none.contact.occurrence(), None);
        let bad = stage_trigger(
            &format!(r#"{CART}, "occurrence": "c", "event_at": "yesterday"}}"#),
            now,
        );
        assert_eq!(
            bad.exclusion,
            Some(ExclusionReason::InvalidField("event_at".into()))
        );
        let stale = stage_trigger(
            &format!(r#"{CART}, "occurrence": "c", "event_at": "2026-11-28T18:00:00Z"}}"#),
            now,
        );
        assert_eq!(stale.exclusion, Some(ExclusionReason::StaleEvent));
        // A cancelling record: its occurrence's row, excluded with the event.
        let cancel = stage_trigger(
            r#"{"campaign_id": "bday-2026-11", "contact": "+5215512345678", "occurrence": "c", "event": "order_placed"}"#,
            now,
        );
        assert_eq!(
            cancel.exclusion,
            Some(ExclusionReason::Cancelled("order_placed".into()))
        );
        assert_eq!(
            cancel.contact,
            ContactKey::raw("+525512345678").with_occurrence("c")
        );
    }

    #[test]
    fn design_example_parses() {
        let r = record(EXAMPLE_RECORD);
        assert_eq!(r.campaign_id, "bday-2026-11");
        assert_eq!(r.contact.phone.as_deref(), Some("+5215512345678"));
        assert_eq!(r.contact.name.as_deref(), Some("María"));
        assert_eq!(r.contact.timezone, None);
        assert_eq!(r.variables["discount"], "20%");
        assert_eq!(r.variables.len(), 3);
        assert_eq!(r.tags.labels, ["vip"]);
        assert_eq!(r.send_after, None);
    }

    #[test]
    fn design_example_stages_with_frozen_params() {
        let staged = stage_json(EXAMPLE_RECORD, Some("+5215512345678"), None);
        assert_eq!(staged.exclusion, None);
        assert_eq!(staged.contact.as_str(), "+525512345678");
        let body: Vec<_> = staged.params.body.iter().map(|p| p.kind.clone()).collect();
        assert_eq!(
            body,
            [
                ParamKind::Text("María".into()),
                ParamKind::Text("20%".into())
            ]
        );
        assert_eq!(staged.params.buttons[0].params, ["MARIA20"]);
        // No timezone in the record: the Mexican number implies one.
        assert_eq!(staged.timezone.as_deref(), Some("America/Mexico_City"));
        assert_eq!(staged.send_after, None);
    }

    #[test]
    fn variables_accept_numbers_and_booleans() {
        let r = record(
            r#"{"campaign_id":"c","variables":{"n":20,"f":1.5,"b":true,"s":"x","gone":null},"extra":1}"#,
        );
        let expected: BTreeMap<String, String> =
            [("b", "true"), ("f", "1.5"), ("n", "20"), ("s", "x")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(r.variables, expected);
        let r = record(r#"{"campaign_id":"c","contact":{"phone":5215512345678}}"#);
        assert_eq!(r.contact.phone.as_deref(), Some("5215512345678"));
    }

    #[test]
    fn malformed_records() {
        for bad in [
            &b"{not json"[..],
            b"{\"campaign_id\": 5}",
            b"{\"campaign_id\":\"c\",\"variables\":{\"a\":[1]}}",
        ] {
            match AudienceRecord::from_json(bad) {
                Err(RecordError::Malformed(msg)) => assert!(msg.contains("line 1 column"), "{msg}"),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
            }
        }
        assert_eq!(
            AudienceRecord::from_json(b"{\"contact\":{}}"),
            Err(RecordError::NoCampaign)
        );
        assert_eq!(
            AudienceRecord::from_json(b"{\"campaign_id\":\"  \"}"),
            Err(RecordError::NoCampaign)
        );
        assert_eq!(
            AudienceRecord::from_json(b"{\"campaign_id\":")
                .unwrap_err()
                .to_string(),
            "audience record is malformed: EOF while parsing a value at line 1 column 15"
        );
        for not_object in [&b"[]"[..], b"not json", b"\"c\"", b"  "] {
            assert!(
                matches!(
                    AudienceRecord::from_json(not_object),
                    Err(RecordError::Malformed(_))
                ),
                "{:?}",
                String::from_utf8_lossy(not_object)
            );
        }
    }

    #[test]
    fn oversized_records_are_rejected_before_parsing() {
        let big = format!(
            r#"{{"campaign_id":"c","variables":{{"x":"{}"}}}}"#,
            "a".repeat(MAX_RECORD_BYTES)
        );
        assert_eq!(
            AudienceRecord::from_json(big.as_bytes()),
            Err(RecordError::TooLarge(big.len()))
        );
        let just_fits = format!(
            r#"{{"campaign_id":"c","variables":{{"x":"{}"}}}}"#,
            "a".repeat(MAX_RECORD_BYTES - 40)
        );
        assert!(AudienceRecord::from_json(just_fits.as_bytes()).is_ok());
    }

    #[test]
    fn invalid_phone_keeps_the_input_as_key() {
        let staged = stage_json(
            r#"{"campaign_id":"c","contact":{"phone":" 12ab "},"variables":{"name":"a","discount":"b","coupon":"c"}}"#,
            None,
            None,
        );
        assert_eq!(staged.contact.as_str(), "12ab");
        assert_eq!(staged.exclusion, Some(ExclusionReason::InvalidPhone));
        assert!(staged.params.is_empty());
    }

    #[test]
    fn national_phone_uses_the_default_region() {
        let json = r#"{"campaign_id":"c","contact":{"phone":"55 1234 5678","name":"Ana"},"variables":{"discount":"b","coupon":"c"}}"#;
        let staged = stage_json(json, None, Some("MX"));
        assert_eq!(staged.contact.as_str(), "+525512345678");
        assert_eq!(staged.exclusion, None);
        let staged = stage_json(json, None, None);
        assert_eq!(staged.exclusion, Some(ExclusionReason::InvalidPhone));
    }

    #[test]
    fn identity_falls_back_to_user_id_then_kafka_key() {
        let vars = r#""variables":{"name":"a","discount":"b","coupon":"c"}"#;
        let staged = stage_json(
            &format!(r#"{{"campaign_id":"c","contact":{{"user_id":"US.1349120865"}},{vars}}}"#),
            Some("+14155552671"),
            None,
        );
        assert_eq!(staged.contact.as_str(), "US.1349120865");
        assert_eq!(staged.exclusion, None);
        assert_eq!(staged.timezone, None);

        let staged = stage_json(
            &format!(r#"{{"campaign_id":"c",{vars}}}"#),
            Some("+1 415 555 2671"),
            None,
        );
        assert_eq!(staged.contact.as_str(), "+14155552671");
        assert_eq!(staged.exclusion, None);

        let staged = stage_json(
            &format!(r#"{{"campaign_id":"c",{vars}}}"#),
            Some("US.77"),
            None,
        );
        assert_eq!(staged.contact.as_str(), "US.77");

        let staged = stage_json(&format!(r#"{{"campaign_id":"c",{vars}}}"#), None, None);
        assert_eq!(staged.contact.as_str(), "");
        assert_eq!(staged.exclusion, Some(ExclusionReason::InvalidPhone));

        let staged = stage_json(
            &format!(r#"{{"campaign_id":"c",{vars}}}"#),
            Some("12ab"),
            None,
        );
        assert_eq!(staged.contact.as_str(), "12ab");
        assert_eq!(staged.exclusion, Some(ExclusionReason::InvalidPhone));

        let staged = stage_json(
            &format!(r#"{{"campaign_id":"c","contact":{{"user_id":"bad id"}},{vars}}}"#),
            None,
            None,
        );
        assert_eq!(
            staged.exclusion,
            Some(ExclusionReason::InvalidField("contact.user_id".into()))
        );
    }

    #[test]
    fn missing_variable_excludes_with_its_name() {
        let staged = stage_json(
            r#"{"campaign_id":"c","contact":{"phone":"+5215512345678","name":"María"},"variables":{"discount":"20%"}}"#,
            None,
            None,
        );
        assert_eq!(staged.contact.as_str(), "+525512345678");
        assert_eq!(
            staged.exclusion,
            Some(ExclusionReason::MissingVariable("coupon".into()))
        );
        assert!(staged.params.is_empty());
        assert_eq!(
            staged.exclusion.unwrap().to_string(),
            "missing_variable:coupon"
        );
    }

    #[test]
    fn send_after_in_contact_then_campaign_timezone() {
        let vars = r#""variables":{"name":"a","discount":"b","coupon":"c"}"#;
        // Contact timezone Madrid (UTC+1 in November).
        let staged = stage_json(
            &format!(
                r#"{{"campaign_id":"c","contact":{{"phone":"+14155552671","timezone":"Europe/Madrid"}},"send_after":"2026-11-22T09:00:00",{vars}}}"#
            ),
            None,
            None,
        );
        assert_eq!(staged.send_after, Some(utc("2026-11-22T08:00:00Z")));
        assert_eq!(staged.timezone.as_deref(), Some("Europe/Madrid"));
        // A US number implies no timezone: the campaign's (Mexico City, UTC-6).
        let staged = stage_json(
            &format!(
                r#"{{"campaign_id":"c","contact":{{"phone":"+14155552671"}},"send_after":"2026-11-22T09:00:00",{vars}}}"#
            ),
            None,
            None,
        );
        assert_eq!(staged.send_after, Some(utc("2026-11-22T15:00:00Z")));
        assert_eq!(staged.timezone, None);
        // An unknown contact timezone falls back instead of excluding.
        let staged = stage_json(
            &format!(
                r#"{{"campaign_id":"c","contact":{{"phone":"+34612345678","timezone":"CET-ish"}},{vars}}}"#
            ),
            None,
            None,
        );
        assert_eq!(staged.exclusion, None);
        assert_eq!(staged.timezone.as_deref(), Some("Europe/Madrid"));
    }

    #[test]
    fn unparsable_send_after_is_an_invalid_field() {
        let staged = stage_json(
            r#"{"campaign_id":"c","contact":{"phone":"+5215512345678"},"send_after":"next week",
                "variables":{"name":"a","discount":"b","coupon":"c"}}"#,
            None,
            None,
        );
        assert_eq!(
            staged.exclusion,
            Some(ExclusionReason::InvalidField("send_after".into()))
        );
        assert_eq!(
            staged.exclusion.unwrap().to_string(),
            "invalid_field:send_after"
        );
        assert!(staged.params.is_empty());
    }
}
