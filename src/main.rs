//! The `switchboard` binary: parses the command line, loads config, starts logging and calls
//! the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use switchboard::config::Config;
use switchboard::store::Store;
use switchboard::{Roles, access, auth, telemetry};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Real-time omnichannel messaging hub"
)]
struct Cli {
    /// A TOML file layered over the embedded defaults.
    #[arg(long, global = true, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve {
        /// Which roles this process runs: api, worker, or api,worker.
        #[arg(long, default_value = "api,worker", value_parser = Roles::parse)]
        roles: Roles,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API keys.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Manage administrators.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a super_admin user; the password comes from SWITCHBOARD_ADMIN_PASSWORD or, when
    /// unset, one line of stdin. The new user's id is printed alone on the last line.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// Account id (acc_…) or slug; the default account when omitted.
        #[arg(long)]
        account: Option<String>,
    },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Mint a key; it is printed once, alone on the last line of stdout.
    Create {
        #[arg(long)]
        name: String,
        /// super_admin, operations, team_lead, agent or branch_manager.
        #[arg(long)]
        role: String,
        /// Account id (acc_…) or slug; the default account when omitted.
        #[arg(long)]
        account: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    telemetry::init_logging(&config.log);
    match cli.command {
        Command::Serve { roles } => {
            let listener = if roles.api {
                Some(tokio::net::TcpListener::bind(config.server.bind).await?)
            } else {
                None
            };
            let shutdown = CancellationToken::new();
            let signal = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                signal.cancel();
            });
            switchboard::run(config, roles, listener, shutdown).await
        }
        Command::Migrate => {
            Store::connect(&config.database).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::ApiKey {
            command:
                ApiKeyCommand::Create {
                    name,
                    role,
                    account,
                },
        } => {
            if !access::BUILTIN_ROLES.contains(&role.as_str()) {
                anyhow::bail!("--role must be one of {}", access::BUILTIN_ROLES.join(", "));
            }
            if name.trim().is_empty() {
                anyhow::bail!("--name must not be empty");
            }
            let store = Store::connect(&config.database).await?;
            let default = store.ensure_account(&config.accounts.default).await?;
            let account_id = match account {
                Some(a) => store
                    .find_account(&a)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("--account: no account `{a}`"))?,
                None => default,
            };
            let minted = auth::mint_key();
            let id = store
                .create_api_key(
                    &account_id,
                    &name,
                    &role,
                    &minted.prefix,
                    &minted.hash,
                    None,
                )
                .await?;
            println!("created API key {id} ({role}) for {account_id}; it is shown only once:");
            println!("{}", minted.key);
            Ok(())
        }
        Command::Admin {
            command:
                AdminCommand::Create {
                    email,
                    name,
                    account,
                },
        } => {
            let password = match std::env::var("SWITCHBOARD_ADMIN_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let store = Store::connect(&config.database).await?;
            let id = auth::admin::create_admin(
                &store,
                &config,
                &email,
                &name,
                &password,
                account.as_deref(),
            )
            .await?;
            println!("created super_admin {email}:");
            println!("{id}");
            Ok(())
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
