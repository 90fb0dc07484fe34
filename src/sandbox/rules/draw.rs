//! The seeded outcome draw: what happens to an accepted message (delivered,
//! read, replied, failed), the same for the same seed and recipient.

/// SplitMix64 finaliser: a stable, well-mixed 64-bit hash step.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a; stable across Rust versions, unlike `DefaultHasher`.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// A uniform draw in [0, 1) fixed by (seed, recipient, ordinal, salt).
pub(crate) fn draw(seed: u64, recipient_key: u64, ordinal: u32, salt: u64) -> f64 {
    let h = mix64(seed ^ mix64(recipient_key ^ mix64(u64::from(ordinal) ^ mix64(salt))));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Shares that shape what happens after a message is accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shares {
    pub(crate) read: f64,
    pub(crate) read_without_delivered: f64,
    pub(crate) reply: f64,
    pub(crate) stop: f64,
    pub(crate) button: f64,
}

/// What a recipient does with an accepted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A `failed` status with this code (no `sent` before it).
    Failed(i64),
    Delivered {
        /// False when the message is read in the open chat: Meta then sends
        /// `read` without `delivered`.
        delivered_status: bool,
        read: bool,
        reply: Option<Reply>,
    },
}

/// An inbound message answering a campaign message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Free text, index into [`REPLY_TEXTS`].
    Text(usize),
    /// The opt-out keyword.
    Stop,
    /// A quick-reply button tap, index into [`BUTTON_TEXTS`].
    Button(usize),
}

pub(crate) const REPLY_TEXTS: &[&str] = &[
    "Thanks!",
    "How much is it?",
    "Sí, me interesa",
    "Can you send more details?",
    "¿Hasta cuándo es válido?",
    "Who is this?",
];

pub(crate) const BUTTON_TEXTS: &[&str] = &["Yes, I'm interested", "Not now"];

pub(crate) const PROFILE_NAMES: &[&str] = &[
    "María", "João", "Aisha", "Wei", "Olivia", "Mateo", "Priya", "Lukas",
];

/// Decide the fate of the `ordinal`-th accepted message to a recipient.
///
/// Keyed by (seed, recipient, ordinal) rather than by wamid: wamids depend on
/// the arrival order of concurrent requests and on a per-process nonce, so
/// they would make runs irreproducible; the ordinal does not.
pub(crate) fn decide(
    seed: u64,
    recipient_key: u64,
    ordinal: u32,
    shares: &Shares,
    failure: Option<i64>,
) -> Outcome {
    if let Some(code) = failure {
        return Outcome::Failed(code);
    }
    let d = |salt: u64| draw(seed, recipient_key, ordinal, salt);
    let reply = (d(1) < shares.reply).then(|| {
        if d(2) < shares.stop {
            Reply::Stop
        } else if d(3) < shares.button {
            Reply::Button((d(4) * BUTTON_TEXTS.len() as f64) as usize)
        } else {
            Reply::Text((d(5) * REPLY_TEXTS.len() as f64) as usize)
        }
    });
    // A reply implies the message was read first.
    let read = reply.is_some() || d(6) < shares.read;
    let delivered_status = !(read && d(7) < shares.read_without_delivered);
    Outcome::Delivered {
        delivered_status,
        read,
        reply,
    }
}
