//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw request body with the app
//! secret, hex-encoded after `sha256=`. Checked before anything is parsed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Signs `body` as Meta does (used by tests, benchmarks and the sandbox).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("hmac accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// True when `header` is a valid signature of `body`. The comparison is
/// constant-time (hmac's `verify_slice`), so timing reveals nothing.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_tampering_does_not() {
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let sig = sign(b"secret", body);
        assert!(verify(b"secret", body, Some(&sig)));
        assert!(!verify(b"other", body, Some(&sig)), "wrong secret");
        let mut tampered = body.to_vec();
        tampered[3] ^= 1;
        assert!(!verify(b"secret", &tampered, Some(&sig)), "tampered body");
        assert!(!verify(b"secret", body, None), "missing header");
        assert!(!verify(b"secret", body, Some("sha1=abc")), "wrong scheme");
        assert!(!verify(b"secret", body, Some("sha256=zz")), "not hex");
    }

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2.
        let sig = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
