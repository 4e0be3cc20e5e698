//! The Noise parameters of ferry's two handshakes, in one place so keys,
//! pairing and sessions depend on them and not on each other.

use crate::ProtocolError;

/// Noise pattern of sessions: the endpoint knows the relay's key.
pub const SESSION_PATTERN: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// Noise pattern of pairing: keys exchanged, authenticated by the SPAKE2 key.
pub const PAIRING_PATTERN: &str = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s";

/// The session's Noise parameters.
///
/// # Panics
/// Never: the pattern string is a constant that snow accepts (checked by tests).
pub fn session_params() -> snow::params::NoiseParams {
    SESSION_PATTERN.parse().expect("valid Noise pattern")
}

/// The pairing's Noise parameters.
///
/// # Panics
/// Never: the pattern string is a constant that snow accepts (checked by tests).
pub fn pairing_params() -> snow::params::NoiseParams {
    PAIRING_PATTERN.parse().expect("valid Noise pattern")
}

/// Maps a snow error to a [`ProtocolError::Crypto`] naming what failed
/// (snow's own error says nothing a user could act on).
pub(crate) fn crypto(what: &'static str) -> impl FnOnce(snow::Error) -> ProtocolError {
    move |_| ProtocolError::Crypto(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_patterns_parse() {
        assert_eq!(session_params().name, SESSION_PATTERN);
        assert_eq!(pairing_params().name, PAIRING_PATTERN);
    }
}
