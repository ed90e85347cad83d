//! Keys derived from the one configured master secret (`auth.secret_key`): the HS256 key that
//! signs access tokens, and the sealing key for secrets kept in the database (provider
//! credentials, TOTP secrets).
//!
//! Sealing is XChaCha20-Poly1305 with a random 192-bit nonce (random nonces are safe at that
//! size), stored as `v1:` + base64(nonce ‖ ciphertext). Each subkey is HMAC-SHA256(master,
//! label), so the signing key never doubles as the sealing key.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::config::AuthConfig;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("auth.key_file {path}: {cause}")]
    File { path: String, cause: String },
}

/// The derived keys a node holds.
pub struct Keys {
    pub jwt_encoding: jsonwebtoken::EncodingKey,
    pub jwt_decoding: jsonwebtoken::DecodingKey,
    pub sealer: Sealer,
}

impl Keys {
    /// From `auth.secret_key`, or (when empty) the key file, created on first use.
    pub fn load(config: &AuthConfig) -> Result<Self, KeyError> {
        let master = match config.secret_key.expose_secret() {
            "" => load_or_create_key_file(&config.key_file)?,
            secret => SecretString::from(secret.to_owned()),
        };
        Ok(Self::from_master(master.expose_secret().as_bytes()))
    }

    pub fn from_master(master: &[u8]) -> Self {
        let jwt = derive(master, b"switchboard/jwt/v1");
        Keys {
            jwt_encoding: jsonwebtoken::EncodingKey::from_secret(&jwt),
            jwt_decoding: jsonwebtoken::DecodingKey::from_secret(&jwt),
            sealer: Sealer::new(derive(master, b"switchboard/seal/v1")),
        }
    }
}

fn derive(master: &[u8], label: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(label);
    mac.finalize().into_bytes().into()
}

fn load_or_create_key_file(path: &str) -> Result<SecretString, KeyError> {
    let err = |cause: String| KeyError::File {
        path: path.to_owned(),
        cause,
    };
    let file = Path::new(path);
    if let Ok(existing) = std::fs::read_to_string(file) {
        let key = existing.trim().to_owned();
        if key.len() < 32 {
            return Err(err("holds fewer than 32 characters".to_owned()));
        }
        return Ok(SecretString::from(key));
    }
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = hex::encode(bytes);
    write_private(file, &key).map_err(|e| err(e.to_string()))?;
    tracing::info!(path, "Generated a new secret key.");
    Ok(SecretString::from(key))
}

#[cfg(unix)]
fn write_private(file: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)?;
    f.write_all(content.as_bytes())
}

#[cfg(not(unix))]
fn write_private(file: &Path, content: &str) -> std::io::Result<()> {
    std::fs::write(file, content)
}

#[derive(Debug, thiserror::Error)]
#[error("sealed value cannot be opened (wrong key or corrupted)")]
pub struct OpenError;

pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    fn new(key: [u8; 32]) -> Self {
        Sealer {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    pub fn seal(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(&nonce.into(), plaintext.as_bytes())
            .unwrap_or_else(|_| unreachable!("encryption of an in-memory buffer cannot fail"));
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        format!("v1:{}", STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<SecretString, OpenError> {
        let raw = sealed
            .strip_prefix("v1:")
            .and_then(|b| STANDARD.decode(b).ok())
            .ok_or(OpenError)?;
        if raw.len() < 24 {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = raw.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| OpenError)?;
        let plain = self
            .cipher
            .decrypt(&nonce.into(), ciphertext)
            .map_err(|_| OpenError)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| OpenError)
    }
}

/// A hint that lets an admin recognise a secret without revealing it: `••••cdef`.
pub fn mask(secret: &str) -> String {
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if secret.chars().count() <= 8 {
        "••••".to_owned()
    } else {
        format!("••••{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_tamper() {
        let keys = Keys::from_master(b"0123456789abcdef0123456789abcdef");
        let sealed = keys.sealer.seal("twilio-token");
        assert!(sealed.starts_with("v1:"));
        assert_ne!(sealed, keys.sealer.seal("twilio-token"), "nonces differ");
        assert_eq!(
            keys.sealer.open(&sealed).unwrap().expose_secret(),
            "twilio-token"
        );
        let other = Keys::from_master(b"another-master-key-of-32-chars!!");
        assert!(other.sealer.open(&sealed).is_err());
        let mut bytes = STANDARD.decode(&sealed[3..]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(
            keys.sealer
                .open(&format!("v1:{}", STANDARD.encode(bytes)))
                .is_err()
        );
    }

    #[test]
    fn masks() {
        assert_eq!(mask("0123456789abcdef"), "••••cdef");
        assert_eq!(mask("short"), "••••");
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret.key");
        let path = path.to_str().unwrap();
        let a = load_or_create_key_file(path).unwrap();
        let b = load_or_create_key_file(path).unwrap();
        assert_eq!(a.expose_secret(), b.expose_secret());
        assert!(a.expose_secret().len() >= 32);
    }
}
