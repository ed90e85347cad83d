//! Authentication: API keys ([`keys`]), signed access tokens and sessions ([`tokens`]) and
//! password hashing ([`passwords`]). Authorization (what an authenticated caller may do) is
//! `crate::access`.

pub mod admin;
pub mod keys;
pub mod passwords;
pub mod tokens;

pub use keys::{hash_key, mint_key};
