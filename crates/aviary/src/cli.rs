//! Command-line interface: `serve`, `user …`, `config …`.

use crate::admin::AdminClient;
use crate::config::Config;
use anyhow::{Context, bail};
use aviary_sasl::StoredCredentials;
use aviary_store::embedded::EmbeddedStore;
use aviary_store::{AccountStore, Stores};
use aviary_xmpp::BareJid;
use clap::{Parser, Subcommand};
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(name = "aviary", version, about = "Aviary XMPP server")]
pub struct Cli {
    /// Configuration file (TOML). Default: ./aviary.toml if it exists, otherwise
    /// built-in defaults. Environment variables AVIARY__SECTION__KEY override it.
    #[arg(long, short, global = true, env = "AVIARY_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Manage accounts (works while the server runs: the CLI then goes through the
    /// server's admin socket in the data directory).
    #[command(subcommand)]
    User(UserCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage the data store.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Create or upgrade the CQL schema (also done automatically at start-up).
    Migrate,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create an account. The password is read from --password, or from standard
    /// input (prompted for on a terminal).
    Add {
        /// `name` (on the first served domain) or `name@domain`.
        jid: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Change an account's password.
    Passwd {
        jid: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Delete an account.
    Del { jid: String },
    /// List accounts.
    List {
        /// Domain to list (default: every served domain).
        #[arg(long)]
        domain: Option<String>,
    },
    /// Create accounts in bulk from a file of `localpart password` lines ('-' reads
    /// standard input). Blank lines and lines starting with '#' are skipped.
    Import { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the configuration; exits non-zero with the reason when it is invalid.
    Check,
    /// Print the effective configuration (file + environment + defaults).
    Dump,
}

/// Loads the configuration the CLI was pointed at.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let env = std::env::vars();
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read configuration file {}", p.display()))?;
            Ok(Config::load(&text, &p.display().to_string(), env)?)
        }
        None => {
            let default = Path::new("aviary.toml");
            if default.exists() {
                let text = std::fs::read_to_string(default)
                    .context("cannot read configuration file aviary.toml")?;
                Ok(Config::load(&text, "aviary.toml", env)?)
            } else {
                Ok(Config::load("", "built-in defaults", env)?)
            }
        }
    }
}

/// Resolves a CLI account argument to a bare JID on a served domain.
pub fn account_jid(config: &Config, arg: &str) -> anyhow::Result<BareJid> {
    let text = if arg.contains('@') {
        arg.to_owned()
    } else {
        format!("{arg}@{}", config.server.domains[0])
    };
    let jid = BareJid::new(&text)
        .map_err(|e| anyhow::anyhow!("'{arg}' is not a valid account name: {e}"))?;
    if jid.node().is_none() {
        bail!("'{arg}' names a domain, not an account");
    }
    if !config
        .server
        .domains
        .iter()
        .any(|d| d == jid.domain().as_str())
    {
        bail!(
            "{} is not a served domain (server.domains = {:?})",
            jid.domain(),
            config.server.domains
        );
    }
    Ok(jid)
}

fn read_password(given: Option<String>, prompt: &str) -> anyhow::Result<String> {
    let pw = match given {
        Some(p) => p,
        None if std::io::stdin().is_terminal() => {
            let first = rpassword::prompt_password(prompt).context("cannot read the password")?;
            let again = rpassword::prompt_password("Repeat password: ")
                .context("cannot read the password")?;
            if first != again {
                bail!("the passwords do not match");
            }
            first
        }
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if pw.is_empty() {
        bail!("the password must not be empty");
    }
    Ok(pw)
}

fn derive(password: &str, config: &Config) -> anyhow::Result<Vec<u8>> {
    Ok(
        StoredCredentials::derive(password, config.auth.scram_iterations)
            .map_err(|e| anyhow::anyhow!("cannot use that password: {e}"))?
            .to_bytes(),
    )
}

/// Where account commands go: the store itself, or — when a running server holds
/// the embedded store — that server's admin socket.
enum Accounts {
    Direct(Stores),
    Server(AdminClient),
}

impl Accounts {
    fn store(&self) -> &dyn AccountStore {
        match self {
            Accounts::Direct(s) => &*s.accounts,
            Accounts::Server(c) => c,
        }
    }

    /// Deletes the account and everything stored for it.
    async fn delete_account(&self, jid: &BareJid) -> anyhow::Result<bool> {
        Ok(match self {
            Accounts::Direct(s) => s.delete_account(jid).await?,
            // The server side deletes the roster, offline messages and block list too.
            Accounts::Server(c) => c.delete(jid).await?,
        })
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Accounts> {
    if config.store.backend == crate::config::StoreBackend::Cql {
        let (stores, _) = crate::server::open_stores(config).await?;
        return Ok(Accounts::Direct(stores));
    }
    let dir = &config.server.data_dir;
    match EmbeddedStore::open(dir) {
        Ok(store) => Ok(Accounts::Direct(Stores::from_backend(store))),
        Err(aviary_store::StoreError::Locked { path }) => match AdminClient::connect(dir).await {
            Some(client) => Ok(Accounts::Server(client)),
            None => bail!(
                "{path} is locked by another process, and no server answers on {}",
                crate::admin::socket_path(dir).display()
            ),
        },
        Err(e) => bail!("{e}"),
    }
}

pub async fn user(config: &Config, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add { jid, password } => {
            let jid = account_jid(config, &jid)?;
            let accounts = open_store(config).await?;
            let store = accounts.store();
            let pw = read_password(password, &format!("Password for {jid}: "))?;
            if !store.create(&jid, &derive(&pw, config)?).await? {
                bail!("{jid} already exists");
            }
            println!("created {jid}");
        }
        UserCommand::Passwd { jid, password } => {
            let jid = account_jid(config, &jid)?;
            let accounts = open_store(config).await?;
            let store = accounts.store();
            let pw = read_password(password, &format!("New password for {jid}: "))?;
            if !store.set_credentials(&jid, &derive(&pw, config)?).await? {
                bail!("{jid} does not exist");
            }
            println!("changed the password of {jid}");
        }
        UserCommand::Del { jid } => {
            let jid = account_jid(config, &jid)?;
            let accounts = open_store(config).await?;
            if !accounts.delete_account(&jid).await? {
                bail!("{jid} does not exist");
            }
            println!("deleted {jid}");
        }
        UserCommand::List { domain } => {
            let accounts = open_store(config).await?;
            let store = accounts.store();
            let domains = match domain {
                Some(d) => vec![d.to_ascii_lowercase()],
                None => config.server.domains.clone(),
            };
            for d in domains {
                let mut after: Option<BareJid> = None;
                loop {
                    let page = store.list(&d, after.as_ref(), 1000).await?;
                    for j in &page {
                        println!("{j}");
                    }
                    match page.last() {
                        Some(last) if page.len() == 1000 => after = Some(last.clone()),
                        _ => break,
                    }
                }
            }
        }
        UserCommand::Import { file } => import(config, &file).await?,
    }
    Ok(())
}

/// Validates every line first (nothing is written if any line is bad), derives the
/// credentials on all cores, then writes them in one transaction.
async fn import(config: &Config, file: &Path) -> anyhow::Result<()> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("cannot read standard input")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, password)) = line.split_once(char::is_whitespace) else {
            errors.push(format!("line {}: expected 'localpart password'", i + 1));
            continue;
        };
        let password = password.trim();
        if password.is_empty() {
            errors.push(format!("line {}: empty password", i + 1));
            continue;
        }
        match account_jid(config, name) {
            Ok(jid) => entries.push((jid, password.to_owned())),
            Err(e) => errors.push(format!("line {}: {e}", i + 1)),
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("{e}");
        }
        bail!("{} invalid line(s); nothing was imported", errors.len());
    }
    let accounts = open_store(config).await?;
    let store = accounts.store();
    let iterations = config.auth.scram_iterations;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let chunk = entries.len().div_ceil(threads).max(1);
    type Derived = anyhow::Result<Vec<(BareJid, Vec<u8>)>>;
    let derived: Vec<Derived> = std::thread::scope(|scope| {
        let handles: Vec<_> = entries
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(jid, pw)| {
                            let creds = StoredCredentials::derive(pw, iterations)
                                .map_err(|e| anyhow::anyhow!("{jid}: {e}"))?;
                            Ok((jid.clone(), creds.to_bytes()))
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker failed")))
            })
            .collect()
    });
    let mut accounts = Vec::with_capacity(entries.len());
    for part in derived {
        accounts.extend(part?);
    }
    let total = accounts.len();
    let created = store.create_many(accounts).await?;
    println!(
        "imported {created} account(s); {} already existed",
        total - created
    );
    Ok(())
}

pub fn config_cmd(config: &Config, cmd: ConfigCommand) {
    match cmd {
        ConfigCommand::Check => println!(
            "configuration is valid (domains: {})",
            config.server.domains.join(", ")
        ),
        ConfigCommand::Dump => print!("{}", config.to_toml()),
    }
}

pub async fn store(config: &Config, cmd: StoreCommand) -> anyhow::Result<()> {
    match cmd {
        StoreCommand::Migrate => match config.store.backend {
            crate::config::StoreBackend::Cql => {
                aviary_store::cql::migrate(&crate::server::cql_config(config)?)
                    .await
                    .context("migration failed")?;
                println!("the CQL schema is up to date");
            }
            crate::config::StoreBackend::Embedded => {
                println!("the embedded store needs no migration");
            }
        },
    }
    Ok(())
}
