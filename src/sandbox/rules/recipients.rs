//! Recipients: the `to` (a phone) or `recipient` (a business-scoped user
//! id) of a request as WhatsApp reads it, and the key the ledgers count it
//! under.

/// A recipient as WhatsApp reports it: `wa_id` (the digits of `to`; empty
/// for a user known by user id only) and `user_id`, with a compact key for
/// the sandbox's maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipient {
    pub(crate) wa_id: String,
    pub(crate) user_id: Option<String>,
    pub(crate) key: u64,
}

/// Top byte of the key of a user id (a phone's holds its length, ≤ 15).
const USER_ID_KEY_TAG: u64 = 0xff << 56;

impl Recipient {
    /// Accepts `+` and the separators people type (space, `-`, `.`, parens);
    /// 7 to 15 digits (E.164 allows at most 15).
    pub(crate) fn parse(to: &str) -> Option<Self> {
        let rest = to.trim().strip_prefix('+').unwrap_or(to.trim());
        let mut wa_id = String::with_capacity(rest.len());
        for c in rest.chars() {
            match c {
                '0'..='9' => wa_id.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return None,
            }
        }
        if !(7..=15).contains(&wa_id.len()) {
            return None;
        }
        // 15 digits fit in 50 bits; the length in the top byte keeps numbers
        // that differ only by leading zeros apart.
        let value: u64 = wa_id.parse().ok()?;
        let key = ((wa_id.len() as u64) << 56) | value;
        Some(Self {
            wa_id,
            user_id: None,
            key,
        })
    }

    /// A business-scoped user id as Meta shapes it: an ISO country code, a
    /// period, then up to 128 letters and digits (`US.13491208655302741918`;
    /// a parent id has `ENT.` after the country).
    pub(crate) fn parse_user_id(id: &str) -> Option<Self> {
        let id = id.trim();
        let (country, rest) = id.split_once('.')?;
        let ok = country.len() == 2
            && country.bytes().all(|b| b.is_ascii_uppercase())
            && !rest.is_empty()
            && id.len() <= 3 + 128 + 4
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
        ok.then(|| Self {
            wa_id: String::new(),
            user_id: Some(id.to_string()),
            key: USER_ID_KEY_TAG | (super::mix64(fnv1a(id.as_bytes())) >> 8),
        })
    }

    /// A phone, else a user id.
    pub(crate) fn parse_any(id: &str) -> Option<Self> {
        Self::parse(id).or_else(|| Self::parse_user_id(id))
    }

    /// What failure rules match against: the phone's digits, else the
    /// user id.
    pub(crate) fn rule_key(&self) -> &str {
        match &self.user_id {
            Some(u) if self.wa_id.is_empty() => u,
            _ => &self.wa_id,
        }
    }
}

/// The user id the sandbox gives a phone (`ZZ`: no country is claimed).
pub(crate) fn derived_user_id(wa_id: &str) -> String {
    format!("ZZ.{:020}", super::mix64(fnv1a(wa_id.as_bytes())))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
