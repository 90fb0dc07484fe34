//! Recipients: the `to` of a request as WhatsApp reads it, and the key the
//! ledgers count it under.

/// A recipient phone as WhatsApp reports it (`wa_id`: the digits of `to`),
/// with a compact key for the sandbox's maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipient {
    pub(crate) wa_id: String,
    pub(crate) key: u64,
}

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
        Some(Self { wa_id, key })
    }
}
