//! How a user's password and token are checked without keeping either: the password as the
//! SCRAM-SHA-256 verifier Postgres stores (which also serves the Postgres listener's SCRAM
//! exchange), the token as its SHA-256 digest. Every comparison takes the same time wherever
//! the bytes differ.

use crate::config::{Password, ScramVerifier};
use pgwire::api::auth::sasl::scram::{ScramSecret, gen_salted_password};
use ring::{digest, hmac};
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// SCRAM's iteration count for passwords given in plain text: RFC 7677's minimum, and
/// Postgres's default.
pub const SCRAM_ITERATIONS: u32 = 4096;

/// What checks one user's password.
pub struct PasswordCheck {
    verifier: ScramVerifier,
    /// A keyed digest of the last password that passed the full check: the HTTP API checks a
    /// password on every request, and a PBKDF2 of 4096 rounds each time would cost
    /// milliseconds of CPU per request.
    last_passed: Mutex<Option<[u8; 32]>>,
    /// The key of that digest, random per process.
    key: hmac::Key,
}

impl PasswordCheck {
    /// The check of `password`, whose plain text (if given so) is salted and hashed now.
    pub fn new(password: Password<'_>) -> PasswordCheck {
        let verifier = match password {
            Password::Plain(text) => verifier_of(text, &rand::random::<[u8; 16]>(), SCRAM_ITERATIONS),
            Password::Verifier(verifier) => verifier,
        };
        PasswordCheck {
            verifier,
            last_passed: Mutex::new(None),
            key: hmac::Key::new(hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()),
        }
    }

    /// A check no password passes: what an unknown user name is checked against, so that a
    /// wrong name costs and answers as a wrong password does.
    pub fn unguessable() -> PasswordCheck {
        let password = format!("{:x?}", rand::random::<[u8; 32]>());
        PasswordCheck::new(Password::Plain(&password))
    }

    /// What the Postgres listener's SCRAM exchange checks the client's proof against.
    pub fn scram_secret(&self) -> ScramSecret {
        ScramSecret::Verifier {
            salt: self.verifier.salt.clone(),
            iterations: self.verifier.iterations as usize,
            stored_key: self.verifier.stored_key.clone(),
            server_key: self.verifier.server_key.clone(),
        }
    }

    /// Whether `offered` is the password. The first check of a password runs the full PBKDF2;
    /// the password that passed last is then recognised by a keyed digest.
    pub fn passes(&self, offered: &str) -> bool {
        if self.passed_last(offered) {
            return true;
        }
        let tag = hmac::sign(&self.key, offered.as_bytes());
        let verifier = &self.verifier;
        let computed = verifier_of(offered, &verifier.salt, verifier.iterations);
        let passed = bool::from(computed.stored_key.ct_eq(&verifier.stored_key));
        if passed {
            *self.last_passed() = tag.as_ref().try_into().ok();
        }
        passed
    }

    /// Whether `offered` is the password that passed the full check last: a keyed digest, no
    /// PBKDF2.
    pub fn passed_last(&self, offered: &str) -> bool {
        let tag = hmac::sign(&self.key, offered.as_bytes());
        self.last_passed()
            .is_some_and(|last| bool::from(last.ct_eq(tag.as_ref())))
    }

    fn last_passed(&self) -> std::sync::MutexGuard<'_, Option<[u8; 32]>> {
        self.last_passed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The SCRAM-SHA-256 verifier of `password` with `salt` and `iterations` (RFC 5802).
pub fn verifier_of(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
    let salted = gen_salted_password(password, salt, iterations as usize);
    let salted = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&salted, b"Client Key");
    ScramVerifier {
        iterations,
        salt: salt.to_vec(),
        stored_key: digest::digest(&digest::SHA256, client_key.as_ref())
            .as_ref()
            .to_vec(),
        server_key: hmac::sign(&salted, b"Server Key").as_ref().to_vec(),
    }
}

/// A bearer token, kept as its SHA-256 digest so every comparison has the same length.
pub struct TokenCheck(digest::Digest);

impl TokenCheck {
    /// The check of `token`.
    pub fn new(token: &str) -> TokenCheck {
        TokenCheck(digest::digest(&digest::SHA256, token.as_bytes()))
    }

    /// Whether `offered` is the token.
    pub fn passes(&self, offered: &str) -> bool {
        let offered = digest::digest(&digest::SHA256, offered.as_bytes());
        bool::from(self.0.as_ref().ct_eq(offered.as_ref()))
    }
}
