//! Creating a `super_admin` from the command line (`switchboard admin create`): how a fresh
//! installation gets its first user, and how an operator recovers when nobody can sign in.
//! The CLI and the tests call the same [`create_admin`].

use anyhow::{Context, bail};

use crate::access::ClientMeta;
use crate::auth::passwords;
use crate::config::Config;
use crate::store::Store;
use crate::store::audit::{self, Actor, AuditRecord};
use crate::store::users::NewUser;

/// Creates a `super_admin` user of `account` (an id or slug; the default account when None)
/// and audits it as `user.created` by the system. The password must meet the policy; an
/// existing email is refused. Returns the new user's id.
pub async fn create_admin(
    store: &Store,
    config: &Config,
    email: &str,
    name: &str,
    password: &str,
    account: Option<&str>,
) -> anyhow::Result<String> {
    let email = email.trim().to_lowercase();
    let name = name.trim();
    if !email.contains('@') || email.len() > 254 {
        bail!("--email must be an email address");
    }
    if name.is_empty() {
        bail!("--name must not be empty");
    }
    passwords::check_policy(password, config.auth.min_password_length, &email)?;
    let account_id = match account {
        Some(a) => store
            .find_account(a)
            .await?
            .with_context(|| format!("--account: no account `{a}`"))?,
        None => store.ensure_account(&config.accounts.default).await?,
    };
    if store.credentials_by_email(&email).await?.is_some() {
        bail!("a user with email {email} already exists");
    }
    let hash = passwords::hash(password)?;
    let mut tx = store.begin().await?;
    let id = Store::insert_user(
        &mut tx,
        &NewUser {
            account_id: &account_id,
            email: &email,
            name,
            password_hash: &hash,
            role: "super_admin",
            branch_id: None,
        },
    )
    .await?;
    let record = AuditRecord::new(
        Some(account_id.clone()),
        Actor::System,
        "user.created",
        "user",
        Some(&id),
        &ClientMeta::default(),
    )
    .after(
        serde_json::json!({ "email": email, "name": name, "role": "super_admin", "via": "cli" }),
    );
    audit::append(&mut tx, &record).await?;
    tx.commit().await?;
    Ok(id)
}
