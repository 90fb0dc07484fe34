//! Contact identity: an E.164 phone number or a Meta business-scoped user id
//! (BSUID), phone normalisation, and the region and default timezone a phone
//! number implies; and the values a template reads of a contact.

use std::collections::BTreeMap;
use std::fmt;

use chrono_tz::Tz;
use phonenumber::{country, Mode, PhoneNumber};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest input handed to the phone parser. E.164 numbers have at most 15
/// digits; 64 characters leave room for any human formatting.
const MAX_PHONE_INPUT: usize = 64;

/// Longest business-scoped user id accepted.
const MAX_BSUID_LEN: usize = 128;

/// The identity of a contact: the store key, the Kafka key of its events and
/// the recipient of its messages.
///
/// Either an E.164 phone number (`+5215512345678`) or a Meta business-scoped
/// user id. Built by [`normalize_phone`], [`ContactKey::parse_id`], or
/// [`ContactKey::raw`] for an input that could not be understood (kept so
/// that the exclusion shows up in reports under what the upstream sent).
///
/// A contact of a triggered campaign has one row per occurrence (the order
/// or cart that triggered it; docs/ARCHITECTURE.md, "Triggered campaigns"):
/// [`ContactKey::with_occurrence`] keys that row. Equality, order and the
/// serialised form cover the occurrence (they identify the row), while
/// [`ContactKey::as_str`] is the contact alone (the recipient, the key of
/// everything the store keeps per contact) and [`ContactKey::row_str`] the
/// row's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContactKey(String);

/// Separates the contact from the occurrence in a row key. A control
/// character: no contact id or occurrence id may hold one.
const OCCURRENCE_SEPARATOR: char = '\u{1f}';

/// Longest occurrence id accepted.
pub const MAX_OCCURRENCE_LEN: usize = 128;

/// Why an occurrence id cannot be used.
pub fn occurrence_error(occurrence: &str) -> Option<String> {
    if occurrence.is_empty() {
        return Some("occurrence is empty".into());
    }
    if occurrence.len() > MAX_OCCURRENCE_LEN {
        return Some(format!(
            "occurrence is {} bytes long (at most {MAX_OCCURRENCE_LEN})",
            occurrence.len()
        ));
    }
    occurrence
        .chars()
        .any(char::is_control)
        .then(|| "occurrence holds a control character".into())
}

impl ContactKey {
    /// Parses a contact id as found in a Kafka key or a record: a BSUID is
    /// kept as it is, anything else must be a phone number (normalised to
    /// E.164, see [`normalize_phone`]).
    pub fn parse_id(raw: &str, default_region: Option<&str>) -> Result<ContactKey, ContactError> {
        let trimmed = raw.trim();
        if is_bsuid(trimmed) {
            return Ok(ContactKey(trimmed.to_string()));
        }
        normalize_phone(trimmed, default_region)
    }

    /// A key taken verbatim, without validation: for contacts that are
    /// excluded because their id could not be understood.
    pub fn raw(raw: impl Into<String>) -> ContactKey {
        let mut raw = raw.into();
        if raw.contains(OCCURRENCE_SEPARATOR) {
            raw = raw.replace(OCCURRENCE_SEPARATOR, "\u{fffd}");
        }
        ContactKey(raw)
    }

    /// A row key read back from the store (or from callback data the
    /// daemon wrote): its occurrence, if any, is kept.
    pub fn from_row(row: impl Into<String>) -> ContactKey {
        ContactKey(row.into())
    }

    /// The key of this contact's row for one occurrence (`occurrence` was
    /// checked by [`occurrence_error`]). A key that has an occurrence
    /// already gets the new one instead.
    pub fn with_occurrence(&self, occurrence: &str) -> ContactKey {
        let mut row = String::with_capacity(self.as_str().len() + 1 + occurrence.len());
        row.push_str(self.as_str());
        row.push(OCCURRENCE_SEPARATOR);
        row.push_str(occurrence);
        ContactKey(row)
    }

    /// The contact alone: the recipient, and the key of what the store
    /// keeps per contact (opt-outs, engagement, caps).
    pub fn as_str(&self) -> &str {
        match self.0.find(OCCURRENCE_SEPARATOR) {
            Some(i) => &self.0[..i],
            None => &self.0,
        }
    }

    /// The occurrence this row is for, if it is a triggered campaign's.
    pub fn occurrence(&self) -> Option<&str> {
        self.0
            .find(OCCURRENCE_SEPARATOR)
            .map(|i| &self.0[i + OCCURRENCE_SEPARATOR.len_utf8()..])
    }

    /// The row's key: the contact, and its occurrence when it has one.
    pub fn row_str(&self) -> &str {
        &self.0
    }

    /// The contact without the occurrence.
    pub fn recipient(&self) -> ContactKey {
        match self.occurrence() {
            Some(_) => ContactKey(self.as_str().to_string()),
            None => self.clone(),
        }
    }

    /// True for an E.164 phone number, false for a user id (or a raw key).
    pub fn is_phone(&self) -> bool {
        self.as_str().starts_with('+')
    }

    /// True for a business-scoped user id.
    pub fn is_user_id(&self) -> bool {
        is_bsuid(self.as_str())
    }

    /// The contact as an owned string.
    pub fn into_string(self) -> String {
        match self.occurrence() {
            Some(_) => self.as_str().to_string(),
            None => self.0,
        }
    }
}

/// The contact, then ` #<occurrence>` for a triggered campaign's row.
impl fmt::Display for ContactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        match self.occurrence() {
            Some(occurrence) => write!(f, " #{occurrence}"),
            None => Ok(()),
        }
    }
}

impl AsRef<str> for ContactKey {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// What a template reads of one contact: the variables of its audience
/// record and the fields of its `contact` object. Borrowed, so freezing a
/// record's parameters copies nothing but the values it keeps; an
/// `AudienceRecord` converts into it.
#[derive(Debug, Clone, Copy)]
pub struct ContactValues<'a> {
    pub variables: &'a BTreeMap<String, String>,
    pub phone: Option<&'a str>,
    pub name: Option<&'a str>,
    pub timezone: Option<&'a str>,
    pub user_id: Option<&'a str>,
    /// Valued tags (`{{tags.customer_id}}`).
    pub tags: &'a BTreeMap<String, String>,
}

/// No valued tags, for values built without a record.
pub static NO_TAGS: BTreeMap<String, String> = BTreeMap::new();

/// True when `s` has the shape of a business-scoped user id: 1 to 128
/// characters of `[A-Za-z0-9._:-]` that do not start with '+' or a digit
/// (which is how it is told apart from a phone number).
pub fn is_bsuid(s: &str) -> bool {
    let Some(&first) = s.as_bytes().first() else {
        return false;
    };
    first != b'+'
        && !first.is_ascii_digit()
        && s.len() <= MAX_BSUID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A phone number that cannot be used as a contact.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ContactError {
    /// No phone was given.
    #[error("contact.phone is missing")]
    Missing,
    /// The text is not a phone number at all.
    #[error("contact.phone: \"{0}\" is not a phone number")]
    NotANumber(String),
    /// A national number and nothing to tell its country.
    #[error("contact.phone: \"{0}\" has no country code and no default region is set")]
    NoCountry(String),
    /// A '+' followed by a code that no country uses.
    #[error("contact.phone: \"{0}\" has an unknown country code")]
    UnknownCountryCode(String),
    /// Well formed, but not a number that exists in its country's plan.
    #[error("contact.phone: \"{0}\" is not a valid number for its country")]
    Invalid(String),
    /// The configured default region is not an ISO 3166 country code.
    #[error("default region \"{0}\" is not an ISO 3166 country code")]
    UnknownRegion(String),
}

/// Normalises a phone number to E.164 (`+525512345678`).
///
/// Accepts international (`+52 1 55 1234 5678`, `0052 55 1234 5678`) and
/// national forms with spaces, dashes, dots, slashes and parentheses. A
/// number without '+' or `00` is read in `default_region` (an ISO code such
/// as `MX`, `US`). The number must be valid in its country's numbering plan
/// (libphonenumber metadata through the `phonenumber` crate).
///
/// Mexico: libphonenumber no longer knows the "1" that WhatsApp used after
/// +52 for mobiles, and calls `+52 1 55 1234 5678` invalid. Upstreams (and
/// WhatsApp's own `wa_id` in webhooks) still use it, so a `+52 1` number is
/// accepted when the number without the 1 is valid, and keyed without the 1:
/// both spellings must be one contact, or an opt-out or an engagement taken
/// under one spelling would not protect the other.
pub fn normalize_phone(
    raw: &str,
    default_region: Option<&str>,
) -> Result<ContactKey, ContactError> {
    normalize_phone_with_region(raw, default_region).map(|(key, _)| key)
}

/// [`normalize_phone`], also returning the number's ISO region (as
/// [`region_of`] would) without parsing the number a second time: ingest
/// needs both for every record.
pub fn normalize_phone_with_region(
    raw: &str,
    default_region: Option<&str>,
) -> Result<(ContactKey, Option<String>), ContactError> {
    let input = raw.trim();
    if input.is_empty() {
        return Err(ContactError::Missing);
    }
    let region = match default_region.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) => Some(
            r.to_ascii_uppercase()
                .parse::<country::Id>()
                .map_err(|_| ContactError::UnknownRegion(r.to_string()))?,
        ),
        None => None,
    };
    // Only digits and the usual punctuation reach the parser: it accepts
    // letters (vanity numbers, "ext."), which are never a WhatsApp recipient,
    // and a small alphabet keeps arbitrary bytes away from its internals.
    let plus_count = input.matches('+').count();
    if input.len() > MAX_PHONE_INPUT
        || !input.bytes().all(|b| {
            b.is_ascii_digit()
                || matches!(b, b' ' | b'-' | b'(' | b')' | b'.' | b'/' | b'+' | b'\t')
        })
        || plus_count > 1
        || (plus_count == 1 && !input.starts_with('+'))
        || !input.bytes().any(|b| b.is_ascii_digit())
    {
        return Err(ContactError::NotANumber(input.to_string()));
    }

    let digits_start = input.trim_start_matches(|c: char| !c.is_ascii_digit() && c != '+');
    let international = digits_start.starts_with('+');
    let idd_00 = !international && digits_start.starts_with("00");
    if !international && !idd_00 && region.is_none() {
        return Err(ContactError::NoCountry(input.to_string()));
    }

    let mut result = parse_valid(region, input);
    if idd_00 && result.is_err() {
        // "00" is the international prefix of most of the world (ITU-T
        // E.164 recommendation); the parser only strips it when the default
        // region's own prefix says so, and some (Brazil: "00" + carrier)
        // read it differently.
        let plus = format!("+{}", &digits_start[2..]);
        if let Ok(number) = parse_valid(None, &plus) {
            result = Ok(number);
        }
    }
    match result {
        Ok(number) => Ok((
            ContactKey(number.format().mode(Mode::E164).to_string()),
            number.country().id().map(|id| id.as_ref().to_string()),
        )),
        Err(Rejection::NotANumber) => Err(ContactError::NotANumber(input.to_string())),
        Err(Rejection::UnknownCountryCode) if international || idd_00 => {
            Err(ContactError::UnknownCountryCode(input.to_string()))
        }
        Err(Rejection::UnknownCountryCode) => Err(ContactError::NotANumber(input.to_string())),
        Err(Rejection::Invalid) => Err(ContactError::Invalid(input.to_string())),
    }
}

enum Rejection {
    NotANumber,
    UnknownCountryCode,
    Invalid,
}

/// Parses and checks validity, with the Mexican "+52 1" allowance.
fn parse_valid(region: Option<country::Id>, input: &str) -> Result<PhoneNumber, Rejection> {
    let number = phonenumber::parse(region, input).map_err(|e| match e {
        phonenumber::ParseError::InvalidCountryCode => Rejection::UnknownCountryCode,
        phonenumber::ParseError::NoNumber | phonenumber::ParseError::MalformedInteger(_) => {
            Rejection::NotANumber
        }
        _ => Rejection::Invalid,
    })?;
    if number.extension().is_some() {
        return Err(Rejection::Invalid);
    }
    // The legacy check first: its range test is cheap, and for such a number
    // the full validity check would only fail.
    if let Some(canonical) = legacy_mexican_mobile(&number) {
        return Ok(canonical);
    }
    if phonenumber::is_valid(&number) {
        Ok(number)
    } else {
        Err(Rejection::Invalid)
    }
}

/// `+52 1` followed by a valid 10-digit Mexican number: the mobile form
/// WhatsApp still uses in `wa_id`s, dropped from the numbering plan in 2019.
/// Returns the number without the 1 when it is valid.
fn legacy_mexican_mobile(number: &PhoneNumber) -> Option<PhoneNumber> {
    if number.code().value() != 52 {
        return None;
    }
    let national = number.national().value();
    // 1 followed by exactly ten digits.
    if !(10_000_000_000..20_000_000_000).contains(&national) {
        return None;
    }
    let without_one = format!("+52{}", national - 10_000_000_000);
    phonenumber::parse(None, &without_one)
        .ok()
        .filter(phonenumber::is_valid)
}

/// The ISO 3166 region of a phone key (`MX` for `+5215512345678`), or
/// `None` for a user id or a number whose region cannot be told (shared
/// country codes resolve to the region that owns the number range, e.g.
/// `+1 416` is `CA`).
pub fn region_of(key: &ContactKey) -> Option<String> {
    if !key.is_phone() {
        return None;
    }
    let number = phonenumber::parse(None, key.as_str()).ok()?;
    number.country().id().map(|id| id.as_ref().to_string())
}

/// The timezone to assume for a contact of `region` (ISO 3166 code) who has
/// none of their own, for countries where one zone is right for (nearly)
/// everyone. `None` where a single guess would be wrong for many people
/// (US, CA, RU, AU, ID, ...): the campaign timezone applies then.
pub fn default_timezone_for_region(region: &str) -> Option<Tz> {
    let tz = match region.trim().to_ascii_uppercase().as_str() {
        // Mexico and Brazil span several zones; most of their people live in
        // the one chosen, so it is the better guess for quiet hours.
        "MX" => Tz::America__Mexico_City,
        "BR" => Tz::America__Sao_Paulo,
        "AR" => Tz::America__Argentina__Buenos_Aires,
        "BO" => Tz::America__La_Paz,
        "CL" => Tz::America__Santiago,
        "CO" => Tz::America__Bogota,
        "CR" => Tz::America__Costa_Rica,
        "CU" => Tz::America__Havana,
        "DO" => Tz::America__Santo_Domingo,
        "EC" => Tz::America__Guayaquil,
        "GT" => Tz::America__Guatemala,
        "HN" => Tz::America__Tegucigalpa,
        "NI" => Tz::America__Managua,
        "PA" => Tz::America__Panama,
        "PE" => Tz::America__Lima,
        "PR" => Tz::America__Puerto_Rico,
        "PY" => Tz::America__Asuncion,
        "SV" => Tz::America__El_Salvador,
        "UY" => Tz::America__Montevideo,
        "VE" => Tz::America__Caracas,
        "ES" => Tz::Europe__Madrid,
        "PT" => Tz::Europe__Lisbon,
        // +44 ranges of the Crown Dependencies resolve to GG, JE and IM.
        "GB" | "GG" | "JE" | "IM" => Tz::Europe__London,
        "IE" => Tz::Europe__Dublin,
        "FR" => Tz::Europe__Paris,
        "DE" => Tz::Europe__Berlin,
        "IT" => Tz::Europe__Rome,
        "NL" => Tz::Europe__Amsterdam,
        "BE" => Tz::Europe__Brussels,
        "CH" => Tz::Europe__Zurich,
        "AT" => Tz::Europe__Vienna,
        "PL" => Tz::Europe__Warsaw,
        "SE" => Tz::Europe__Stockholm,
        "NO" => Tz::Europe__Oslo,
        "DK" => Tz::Europe__Copenhagen,
        "FI" => Tz::Europe__Helsinki,
        "GR" => Tz::Europe__Athens,
        "RO" => Tz::Europe__Bucharest,
        "TR" => Tz::Europe__Istanbul,
        "UA" => Tz::Europe__Kyiv,
        "IN" => Tz::Asia__Kolkata,
        "PK" => Tz::Asia__Karachi,
        "BD" => Tz::Asia__Dhaka,
        "LK" => Tz::Asia__Colombo,
        "NP" => Tz::Asia__Kathmandu,
        "AE" => Tz::Asia__Dubai,
        "SA" => Tz::Asia__Riyadh,
        "IL" => Tz::Asia__Jerusalem,
        "CN" => Tz::Asia__Shanghai,
        "HK" => Tz::Asia__Hong_Kong,
        "JP" => Tz::Asia__Tokyo,
        "KR" => Tz::Asia__Seoul,
        "SG" => Tz::Asia__Singapore,
        "MY" => Tz::Asia__Kuala_Lumpur,
        "PH" => Tz::Asia__Manila,
        "TH" => Tz::Asia__Bangkok,
        "VN" => Tz::Asia__Ho_Chi_Minh,
        "EG" => Tz::Africa__Cairo,
        "NG" => Tz::Africa__Lagos,
        "KE" => Tz::Africa__Nairobi,
        "ZA" => Tz::Africa__Johannesburg,
        "MA" => Tz::Africa__Casablanca,
        "GH" => Tz::Africa__Accra,
        "NZ" => Tz::Pacific__Auckland,
        _ => return None,
    };
    Some(tz)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(raw: &str, region: Option<&str>) -> String {
        match normalize_phone(raw, region) {
            Ok(key) => key.into_string(),
            Err(e) => panic!("{raw:?} in {region:?}: {e}"),
        }
    }

    #[test]
    fn an_occurrence_keys_its_own_row_and_keeps_the_contact() {
        let contact = ContactKey::raw("+5215512345678");
        let a = contact.with_occurrence("cart-1");
        let b = contact.with_occurrence("cart-2");
        assert_ne!(a, b, "two occurrences are two rows");
        assert_ne!(
            a, contact,
            "an occurrence's row is not the contact's plain row"
        );
        assert_eq!(a, contact.with_occurrence("cart-1"));
        for row in [&a, &b] {
            assert_eq!(
                row.as_str(),
                "+5215512345678",
                "the recipient stays the contact"
            );
            assert_eq!(row.recipient(), contact);
            assert!(row.is_phone());
        }
        assert_eq!(a.occurrence(), Some("cart-1"));
        assert_eq!(contact.occurrence(), None);
        assert_eq!(a.to_string(), "+5215512345678 #cart-1");
        // Stored and read back, the row keeps its occurrence.
        let json = serde_json::to_string(&a).unwrap();
        let back: ContactKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        assert_eq!(ContactKey::from_row(a.row_str()), a);
        // An occurrence replaces another; a raw input cannot forge one.
        assert_eq!(a.with_occurrence("cart-2"), b);
        assert_eq!(ContactKey::raw("+1\u{1f}x").occurrence(), None);
        // An order name may hold '#' and spaces, not control characters.
        assert_eq!(occurrence_error("#1001 A"), None);
        assert!(occurrence_error("").is_some());
        assert!(occurrence_error("a\nb").is_some());
        assert!(occurrence_error(&"x".repeat(129)).is_some());
    }

    fn err(raw: &str, region: Option<&str>) -> String {
        match normalize_phone(raw, region) {
            Ok(key) => panic!("{raw:?} in {region:?} normalised to {key}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn mexico_in_several_styles() {
        assert_eq!(e164("+52 1 55 1234 5678", None), "+525512345678");
        assert_eq!(e164("+5215512345678", None), "+525512345678");
        assert_eq!(e164("+52 55 1234 5678", None), "+525512345678");
        assert_eq!(e164("0052 55 1234 5678", None), "+525512345678");
        assert_eq!(e164("0052 (55) 1234-5678", Some("MX")), "+525512345678");
        assert_eq!(e164("55 1234 5678", Some("MX")), "+525512345678");
        assert_eq!(e164("(55) 1234-5678", Some("mx")), "+525512345678");
    }

    #[test]
    fn legacy_mexican_one_needs_a_valid_number_behind_it() {
        // +52 1 followed by a number that is not valid in Mexico.
        assert_eq!(
            err("+52 1 00 1234 5678", None),
            "contact.phone: \"+52 1 00 1234 5678\" is not a valid number for its country"
        );
    }

    #[test]
    fn united_states_in_several_styles() {
        assert_eq!(e164("+1 415-555-2671", None), "+14155552671");
        assert_eq!(e164("(415) 555-2671", Some("US")), "+14155552671");
        assert_eq!(e164("1-415-555-2671", Some("US")), "+14155552671");
        assert_eq!(e164("415.555.2671", Some("US")), "+14155552671");
        // The US international prefix reaches Mexico.
        assert_eq!(e164("011 52 55 1234 5678", Some("US")), "+525512345678");
    }

    #[test]
    fn spain_india_brazil_britain() {
        assert_eq!(e164("+34 612 34 56 78", None), "+34612345678");
        assert_eq!(e164("612 345 678", Some("ES")), "+34612345678");
        assert_eq!(e164("0034 612 345 678", None), "+34612345678");
        assert_eq!(e164("+91 98765 43210", None), "+919876543210");
        assert_eq!(e164("098765-43210", Some("IN")), "+919876543210");
        assert_eq!(e164("9876543210", Some("IN")), "+919876543210");
        assert_eq!(e164("+55 11 91234-5678", None), "+5511912345678");
        assert_eq!(e164("(11) 91234-5678", Some("BR")), "+5511912345678");
        // In Brazil "00" is followed by a carrier code; "00 55" still means +55.
        assert_eq!(e164("0055 11 91234 5678", Some("BR")), "+5511912345678");
        assert_eq!(e164("+44 7400 123456", None), "+447400123456");
        assert_eq!(e164("07400 123456", Some("GB")), "+447400123456");
        assert_eq!(e164("+44 (0)20 7946 0958", None), "+442079460958");
    }

    #[test]
    fn invalid_numbers_have_exact_messages() {
        assert_eq!(
            err("12ab", None),
            "contact.phone: \"12ab\" is not a phone number"
        );
        assert_eq!(
            err("+1 555", None),
            "contact.phone: \"+1 555\" is not a valid number for its country"
        );
        assert_eq!(
            err("5512345678", None),
            "contact.phone: \"5512345678\" has no country code and no default region is set"
        );
        assert_eq!(err("", None), "contact.phone is missing");
        assert_eq!(err("   ", Some("MX")), "contact.phone is missing");
        assert_eq!(
            err("+999 1234567", None),
            "contact.phone: \"+999 1234567\" has an unknown country code"
        );
        assert_eq!(
            err("+1 415 555 2671 ext. 12", None),
            "contact.phone: \"+1 415 555 2671 ext. 12\" is not a phone number"
        );
        assert_eq!(
            err("55+1234", Some("MX")),
            "contact.phone: \"55+1234\" is not a phone number"
        );
        assert_eq!(
            err("1234", Some("ES")),
            "contact.phone: \"1234\" is not a valid number for its country"
        );
        assert_eq!(
            err("+1 415 555 2671", Some("Mars")),
            "default region \"Mars\" is not an ISO 3166 country code"
        );
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // A cheap deterministic fuzz over the characters that reach the parser.
        let alphabet: Vec<char> = "0123456789+-() ./a\u{0663}".chars().collect();
        let mut seed: u64 = 0x5eed;
        let mut accepted = 0;
        for _ in 0..5_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 58) as usize + 1;
            let mut x = seed;
            let s: String = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    alphabet[(x >> 40) as usize % alphabet.len()]
                })
                .collect();
            for region in [None, Some("MX"), Some("BR"), Some("US")] {
                if let Ok(key) = normalize_phone(&s, region) {
                    assert!(key.is_phone(), "{s:?} gave {key}");
                    accepted += 1;
                }
            }
        }
        // The alphabet is rich enough that some inputs are real numbers.
        assert!(accepted > 0);
    }

    #[test]
    fn bsuid_detection() {
        assert!(is_bsuid("US.13491208655302741918"));
        assert!(is_bsuid("abc"));
        assert!(is_bsuid("_x:y-z.1"));
        assert!(!is_bsuid(""));
        assert!(!is_bsuid("+5215512345678"));
        assert!(!is_bsuid("5215512345678"));
        assert!(!is_bsuid("US 1349"));
        assert!(!is_bsuid("user@example"));
        assert!(!is_bsuid(&format!("a{}", "1".repeat(128))));
        assert!(is_bsuid(&format!("a{}", "1".repeat(127))));
    }

    #[test]
    fn parse_id_keeps_user_ids_and_normalises_phones() {
        let user = ContactKey::parse_id(" US.13491208655302741918 ", None).unwrap();
        assert_eq!(user.as_str(), "US.13491208655302741918");
        assert!(!user.is_phone());
        assert!(user.is_user_id());
        let phone = ContactKey::parse_id("+52 1 55 1234 5678", None).unwrap();
        assert_eq!(phone.to_string(), "+525512345678");
        assert!(phone.is_phone());
        assert_eq!(
            ContactKey::parse_id("12ab", None).unwrap_err(),
            ContactError::NotANumber("12ab".into())
        );
        assert_eq!(
            ContactKey::parse_id("user@example", None).unwrap_err(),
            ContactError::NotANumber("user@example".into())
        );
    }

    #[test]
    fn contact_key_serialises_as_a_plain_string() {
        let key = ContactKey::raw("+14155552671");
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"+14155552671\"");
        let back: ContactKey = serde_json::from_str("\"+14155552671\"").unwrap();
        assert_eq!(back, key);
    }

    #[test]
    fn region_and_timezone_of_a_phone() {
        let mx = normalize_phone("+52 1 55 1234 5678", None).unwrap();
        assert_eq!(region_of(&mx).as_deref(), Some("MX"));
        let es = normalize_phone("+34 612 345 678", None).unwrap();
        assert_eq!(region_of(&es).as_deref(), Some("ES"));
        let us = normalize_phone("+1 415 555 2671", None).unwrap();
        assert_eq!(region_of(&us).as_deref(), Some("US"));
        assert_eq!(region_of(&ContactKey::raw("US.1349")), None);
        assert_eq!(
            normalize_phone_with_region("07400 123456", Some("GB")),
            Ok((ContactKey::raw("+447400123456"), Some("GB".to_string())))
        );

        assert_eq!(
            default_timezone_for_region("MX"),
            Some(chrono_tz::America::Mexico_City)
        );
        assert_eq!(
            default_timezone_for_region("in"),
            Some(chrono_tz::Asia::Kolkata)
        );
        assert_eq!(
            default_timezone_for_region("CL"),
            Some(chrono_tz::America::Santiago)
        );
        assert_eq!(
            default_timezone_for_region("GG"),
            Some(chrono_tz::Europe::London)
        );
        assert_eq!(default_timezone_for_region("US"), None);
        assert_eq!(default_timezone_for_region(""), None);
    }
}
