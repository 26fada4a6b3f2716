//! `veil wallet`: an Ed25519 account key in a file, and the owner-only operations on it against a
//! validator's JSON-RPC: balance, history (signed queries sealed to the network's transaction key,
//! answered sealed to a one-time reply key) and transfers (signed, sealed envelopes).
//!
//! Amounts are integers in the token's smallest unit.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use veil_client::ledger::{LedgerClient, Wallet, format_amount};
use veil_crypto::sign::Address;
use veil_ledger::{Direction, FailureReason, MAX_HISTORY_PAGE, ReceiptStatus};

/// The JSON-RPC address of the first validator `veil node init` writes by default.
pub const DEFAULT_RPC: &str = "127.0.0.1:27000";

/// `veil wallet`.
#[derive(Debug, Args)]
pub struct WalletArgs {
    #[command(subcommand)]
    pub command: WalletCommand,
    /// A validator's JSON-RPC address (IP:port or URL).
    #[arg(long, global = true, env = "VEIL_RPC", default_value = DEFAULT_RPC, value_name = "ADDR")]
    pub rpc: String,
    /// The wallet key file [default: $VEIL_DATA_DIR/wallet.key, else ~/.veil/wallet.key].
    #[arg(long, global = true, env = "VEIL_WALLET", value_name = "FILE")]
    pub wallet: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Create a new wallet key file (mode 0600; never overwrites) and print its address.
    New {
        /// Where to write it [default: the --wallet path].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print the wallet's address.
    Address,
    /// Print the balance and next nonce (a signed query only this wallet can read the answer to).
    Balance,
    /// Send AMOUNT to the address TO, then wait for the receipt.
    Transfer {
        /// The recipient (`veil1…`).
        to: String,
        /// The amount, an integer in the smallest unit (`_` and `,` separators allowed).
        #[arg(value_parser = parse_amount)]
        amount: u64,
        /// How long to wait for the receipt, in seconds.
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        timeout: u64,
        /// Submit and return without waiting for the receipt.
        #[arg(long)]
        no_wait: bool,
    },
    /// Print the account's transfers (sent and received).
    History {
        /// The first entry.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// How many entries at most.
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
}

/// Parses an amount: decimal digits, with optional `_` or `,` separators.
pub fn parse_amount(s: &str) -> Result<u64, String> {
    let digits: String = s.chars().filter(|c| *c != '_' && *c != ',').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{s:?} is not an amount: give an integer in the smallest unit, e.g. 2500"
        ));
    }
    digits
        .parse()
        .map_err(|_| format!("{s:?} is larger than the largest amount (2^64 - 1)"))
}

/// The default wallet file.
pub fn default_wallet_path() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("VEIL_DATA_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("wallet.key"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("cannot find the home directory: set HOME or VEIL_DATA_DIR, or pass --wallet FILE")?;
    Ok(PathBuf::from(home).join(".veil").join("wallet.key"))
}

fn out(line: &str) -> anyhow::Result<()> {
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(())
}

/// Runs `veil wallet …`.
pub fn run(args: WalletArgs) -> anyhow::Result<ExitCode> {
    let wallet_path = match &args.wallet {
        Some(p) => p.clone(),
        None => default_wallet_path()?,
    };
    match &args.command {
        WalletCommand::New { out: target } => {
            let path = target.clone().unwrap_or(wallet_path);
            let wallet = Wallet::generate()?;
            wallet.save(&path)?;
            if args.json {
                out(&json!({ "address": wallet.address().to_string(), "file": path }).to_string())?;
            } else {
                out(&wallet.address().to_string())?;
                eprintln!(
                    "wrote the new wallet key to {} (keep it secret; it is the account)",
                    path.display()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        WalletCommand::Address => {
            let wallet = Wallet::load(&wallet_path)?;
            if args.json {
                out(&json!({ "address": wallet.address().to_string() }).to_string())?;
            } else {
                out(&wallet.address().to_string())?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let wallet = Wallet::load(&wallet_path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(online(&args, &wallet))
}

async fn online(args: &WalletArgs, wallet: &Wallet) -> anyhow::Result<ExitCode> {
    let client = LedgerClient::new(&args.rpc)?;
    let keys = client
        .network_keys()
        .await
        .context("fetching the network's keys (veil_networkKeys)")?;
    match &args.command {
        WalletCommand::Balance => {
            let b = wallet.balance(&client, &keys).await?;
            if args.json {
                out(&json!({
                    "address": wallet.address().to_string(),
                    "balance": b.balance,
                    "nonce": b.nonce,
                    "height": b.height,
                })
                .to_string())?;
            } else {
                out(&format!(
                    "{}: balance {} (next nonce {}, at height {} of {})",
                    wallet.address(),
                    format_amount(b.balance),
                    b.nonce,
                    b.height,
                    keys.chain_id
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        WalletCommand::History { from, limit } => {
            let mut entries = Vec::new();
            let mut next = *from;
            let end = from.saturating_add(*limit);
            while next < end {
                let page =
                    u32::try_from((end - next).min(u64::from(MAX_HISTORY_PAGE))).unwrap_or(MAX_HISTORY_PAGE);
                let got = wallet.history(&client, &keys, next, page).await?;
                let n = got.len() as u64;
                entries.extend(got);
                if n < u64::from(page) {
                    break;
                }
                next += n;
            }
            if args.json {
                let list: Vec<_> = entries
                    .iter()
                    .map(|h| {
                        json!({
                            "height": h.height,
                            "direction": match h.direction { Direction::Sent => "sent", Direction::Received => "received" },
                            "counterparty": h.counterparty.to_string(),
                            "amount": h.amount,
                            "fee": h.fee,
                            "nonce": h.nonce,
                        })
                    })
                    .collect();
                out(&serde_json::Value::Array(list).to_string())?;
            } else if entries.is_empty() {
                out("no transfers")?;
            } else {
                for h in &entries {
                    out(&match h.direction {
                        Direction::Sent => format!(
                            "height {:>8}  sent      {:>20} to   {} (fee {}, nonce {})",
                            h.height,
                            format_amount(h.amount),
                            h.counterparty,
                            format_amount(h.fee),
                            h.nonce
                        ),
                        Direction::Received => format!(
                            "height {:>8}  received  {:>20} from {}",
                            h.height,
                            format_amount(h.amount),
                            h.counterparty
                        ),
                    })?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        WalletCommand::Transfer {
            to,
            amount,
            timeout,
            no_wait,
        } => {
            let to: Address = to
                .parse()
                .with_context(|| format!("the recipient {to:?} is not a veil1… address"))?;
            let before = wallet
                .balance(&client, &keys)
                .await
                .context("reading the balance and nonce")?;
            let sealed = wallet.seal_transfer(&keys, before.nonce, to, *amount)?;
            if before.balance < amount.saturating_add(sealed.fee) {
                bail!(
                    "insufficient balance: sending {} with fee {} needs {}, the wallet holds {}",
                    format_amount(*amount),
                    format_amount(sealed.fee),
                    format_amount(amount.saturating_add(sealed.fee)),
                    format_amount(before.balance)
                );
            }
            let id = client
                .submit(&sealed.envelope)
                .await
                .context("submitting the transaction")?;
            if !args.json {
                eprintln!(
                    "submitted transfer {} of {} to {} (fee {}, nonce {}) via {}",
                    hex::encode(id),
                    format_amount(*amount),
                    to,
                    format_amount(sealed.fee),
                    sealed.nonce,
                    client.url()
                );
            }
            if *no_wait {
                if args.json {
                    out(&json!({ "id": hex::encode(id), "nonce": sealed.nonce, "fee": sealed.fee, "status": "submitted" })
                        .to_string())?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.enable_steady_tick(Duration::from_millis(120));
            let receipt = wallet
                .wait_receipt(
                    &client,
                    &keys,
                    sealed.nonce,
                    Duration::from_secs(*timeout),
                    Duration::from_millis(300),
                    |t| {
                        spinner.set_message(format!("waiting for the receipt… {:.1} s", t.as_secs_f64()));
                    },
                )
                .await;
            spinner.finish_and_clear();
            let receipt = receipt?;
            let after = wallet.balance(&client, &keys).await.ok();
            let (status, reason) = match receipt.status {
                ReceiptStatus::Applied => ("applied", None),
                ReceiptStatus::Failed(FailureReason::InsufficientBalance) => {
                    ("failed", Some("insufficient balance"))
                }
                ReceiptStatus::Failed(FailureReason::Overflow) => {
                    ("failed", Some("the recipient's balance would overflow"))
                }
            };
            if args.json {
                out(&json!({
                    "id": hex::encode(id),
                    "status": status,
                    "reason": reason,
                    "height": receipt.height,
                    "fee": receipt.fee,
                    "nonce": receipt.nonce,
                    "balance": after.map(|b| b.balance),
                })
                .to_string())?;
            } else {
                match reason {
                    None => out(&format!(
                        "applied at height {}: sent {} to {}, fee {}{}",
                        receipt.height,
                        format_amount(*amount),
                        to,
                        format_amount(receipt.fee),
                        after
                            .map(|b| format!("; balance now {}", format_amount(b.balance)))
                            .unwrap_or_default()
                    ))?,
                    Some(why) => out(&format!(
                        "FAILED at height {}: {why}; the fee {} was charged",
                        receipt.height,
                        format_amount(receipt.fee)
                    ))?,
                }
            }
            Ok(if reason.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        WalletCommand::New { .. } | WalletCommand::Address => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use clap::Parser as _;

    use super::*;
    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("veil").chain(args.iter().copied()))
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("2500"), Ok(2500));
        assert_eq!(parse_amount("1_000_000"), Ok(1_000_000));
        assert_eq!(parse_amount("1,000"), Ok(1_000));
        assert!(parse_amount("1.5").is_err());
        assert!(parse_amount("-3").is_err());
        assert!(parse_amount("").is_err());
        assert!(
            parse_amount("99999999999999999999999")
                .unwrap_err()
                .contains("largest")
        );
    }

    #[test]
    fn wallet_arguments() {
        let Command::Wallet(args) =
            parse(&["wallet", "transfer", "veil1aa", "1_000", "--rpc", "127.0.0.1:1"])
                .unwrap()
                .command
        else {
            panic!()
        };
        assert_eq!(args.rpc, "127.0.0.1:1");
        let WalletCommand::Transfer {
            to,
            amount,
            timeout,
            no_wait,
        } = args.command
        else {
            panic!()
        };
        assert_eq!(
            (to.as_str(), amount, timeout, no_wait),
            ("veil1aa", 1_000, 60, false)
        );
        let Command::Wallet(args) = parse(&["wallet", "--wallet", "/tmp/w", "balance"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(args.wallet, Some(PathBuf::from("/tmp/w")));
        assert!(matches!(args.command, WalletCommand::Balance));
        assert!(parse(&["wallet", "transfer", "veil1aa", "lots"]).is_err());
        assert!(parse(&["wallet", "transfer", "veil1aa"]).is_err());
        let Command::Wallet(args) = parse(&["wallet", "new", "--out", "/tmp/x"]).unwrap().command else {
            panic!()
        };
        assert!(matches!(args.command, WalletCommand::New { out: Some(_) }));
        assert!(matches!(
            parse(&["wallet", "history", "--limit", "5"]).unwrap().command,
            Command::Wallet(WalletArgs {
                command: WalletCommand::History { from: 0, limit: 5 },
                ..
            })
        ));
    }

    #[test]
    fn new_and_address_offline() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("w.key");
        let cli = parse(&["wallet", "--wallet", path.to_str().unwrap(), "new"]).unwrap();
        let Command::Wallet(args) = cli.command else {
            panic!()
        };
        assert_eq!(run(args).unwrap(), ExitCode::SUCCESS);
        assert!(Wallet::load(&path).is_ok());
        let cli = parse(&["wallet", "--wallet", path.to_str().unwrap(), "new"]).unwrap();
        let Command::Wallet(args) = cli.command else {
            panic!()
        };
        assert!(
            run(args)
                .unwrap_err()
                .to_string()
                .contains("refusing to overwrite")
        );
    }
}
