//! Four real `veil node` processes on 127.0.0.1 (ports chosen by the OS), driven through the `veil
//! wallet` CLI and raw JSON-RPC, in one network for one test (a second network would double the cost on
//! a 2-core machine):
//!
//! 1. **Transfers**: the demo wallet funds a new wallet A, A pays B twice; balances read via the CLI
//!    through different validators.
//! 2. **Crash and catch-up**: validator 3 is killed with SIGKILL; the chain keeps finalizing and another
//!    transfer commits; validator 3 restarts from its disk, catches up to the others' height and agrees
//!    with them (same block digest and state root at a common height, same balance answers).
//! 3. **Bad input**: malformed hex, truncated, oversized, wrong-epoch, replayed, badly signed and
//!    over-balance envelopes are each refused with a clear JSON-RPC error; every validator keeps running
//!    and the chain keeps finalizing.
//! 4. **Observer**: every block (all fields, and the envelopes' raw bytes), every RPC answer a non-owner
//!    gets (status, networkKeys, getBlock, /metrics, the refusals above, and the answers to queries signed
//!    by an unrelated wallet C), every file under every validator's directory (raw bytes, recursively:
//!    data, sealed seed, chain store, key, config) and the nodes' stdout/stderr (Veil's crates logging at
//!    trace level) hold none of: the transfers' amounts and the balances they produce (decimal, with
//!    thousands separators, u64 little- and big-endian), A's and B's addresses (`veil1…` and the raw 20
//!    bytes) and public keys (raw, hex). A and B are not in the genesis, so nothing is excluded for them.
//!    The demo wallet's address is public by design (the genesis allocates to it; `genesis.json` and
//!    `demo-wallet.key` sit outside the validators' directories and are not scanned for it), but it must
//!    not appear in any validator's directory, log or RPC answer either, except in C's own history (the
//!    demo wallet paid C, and C may know that). The scanner is first shown to find each kind of needle.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/nodes.rs"]
mod nodes;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nodes::{Net, VALIDATORS};
use serde_json::{Value, json};
use veil_client::ledger::{NetworkKeys, Wallet};

/// Generous limits for a loaded 2-core machine; none decides a pass by timing.
const START_LIMIT: Duration = Duration::from_secs(180);
const PROGRESS_LIMIT: Duration = Duration::from_secs(90);

/// The demo wallet's genesis balance (large enough for the distinctive amounts below).
const DEMO_BALANCE: u64 = 0x7000_0000_0000_0000;
/// Distinctive amounts: no byte pattern or decimal string of these turns up by chance.
const FUND_A: u64 = 0x0BAD_F00D_5A17_C0DE;
const A_TO_B_1: u64 = 0x5A17_C0DE_BEEF;
const A_TO_B_2: u64 = 0x3C0F_FEE1_D00D;
/// What the unrelated wallet C gets (not a needle).
const TO_C: u64 = 777;

/// Log filter of the nodes in this test: trace in Veil's own crates (the code that sees plaintext), info
/// in the libraries below them (Commonware never sees plaintext, and its debug output is voluminous).
const NODE_LOG: &str = "info,veil_node=trace,veil_ledger=trace,veil_cli=trace,veil_client=trace,veil_platform=trace,veil_crypto=trace";

fn json_ok(v: &Value, what: &str) {
    assert_eq!(v["status"], "applied", "{what}: {v}");
}

#[test]
fn four_validator_processes_transfer_survive_a_crash_refuse_bad_input_and_leak_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut net = Net::init(root, NODE_LOG, DEMO_BALANCE);
    let started = Instant::now();
    net.start_all();
    for i in 0..VALIDATORS {
        net.wait_for(&format!("validator {i}'s RPC"), START_LIMIT, |n| n.status(i));
        eprintln!("validator {i} answers after {:?}", started.elapsed());
    }
    for i in 0..VALIDATORS {
        net.wait_height(i, 1, START_LIMIT);
    }
    eprintln!("4 validators finalizing after {:?}", started.elapsed());

    // 1. Transfers through the CLI: demo → A, A → B twice, demo → C.
    let (wallet_a, addr_a) = net.new_wallet(root, "a");
    let (wallet_b, addr_b) = net.new_wallet(root, "b");
    let (wallet_c, addr_c) = net.new_wallet(root, "c");
    let demo = net.demo_wallet.clone();
    let t = Instant::now();
    let r = net.wallet_ok(0, &demo, &["transfer", &addr_a, &FUND_A.to_string()]);
    json_ok(&r, "demo → A");
    eprintln!("first transfer committed in {:?}", t.elapsed());
    let r1 = net.wallet_ok(1, &wallet_a, &["transfer", &addr_b, &A_TO_B_1.to_string()]);
    json_ok(&r1, "A → B (1)");
    let r2 = net.wallet_ok(2, &wallet_a, &["transfer", &addr_b, &A_TO_B_2.to_string()]);
    json_ok(&r2, "A → B (2)");
    let fees = r1["fee"].as_u64().unwrap() + r2["fee"].as_u64().unwrap();
    let balance_a = FUND_A - A_TO_B_1 - A_TO_B_2 - fees;
    let balance_b = A_TO_B_1 + A_TO_B_2;
    assert_eq!(net.balance(3, &wallet_b), balance_b);
    assert_eq!(net.balance(0, &wallet_a), balance_a);
    let history = net.wallet_ok(1, &wallet_b, &["history"]);
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history}");
    assert_eq!(history[0]["counterparty"], addr_a.as_str(), "{history}");

    // 2. Kill validator 3: the others keep finalizing and a transfer commits; restart it: it catches up
    //    and agrees.
    net.kill(3);
    let h0 = net.height(0).unwrap();
    net.wait_height(0, h0 + 3, PROGRESS_LIMIT);
    let r = net.wallet_ok(1, &demo, &["transfer", &addr_c, &TO_C.to_string()]);
    json_ok(&r, "demo → C with validator 3 down");
    let committed_while_down = r["height"].as_u64().unwrap();
    let t = Instant::now();
    net.start(3);
    let target = net.height(0).unwrap();
    net.wait_height(3, target, START_LIMIT);
    eprintln!(
        "validator 3 caught up to height {target} in {:?} (the transfer to C committed at {committed_while_down} \
         while it was down)",
        t.elapsed()
    );
    let agreed = agree_at_common_height(&mut net);
    eprintln!("all 4 agree on block and state root at height {agreed}");
    assert!(agreed >= committed_while_down);
    assert_eq!(
        net.balance(3, &wallet_c),
        TO_C,
        "validator 3 answers the transfer it missed"
    );
    assert_eq!(net.balance(3, &wallet_b), balance_b);

    // 3. Bad input against a live node.
    let refusals = bad_input(&mut net, &wallet_c);

    // 4. The observer's view.
    let needles = needles(
        &[(&wallet_a, &addr_a), (&wallet_b, &addr_b)],
        &[FUND_A, A_TO_B_1, A_TO_B_2, balance_a, balance_b],
    );
    let demo_needles = needles_of_wallet(&demo, &net.demo_address);
    scanner_finds_planted_needles(root, &needles);
    let mut seen = Vec::<(String, Vec<u8>)>::new();
    // C's own answers name the demo wallet, which paid C: that is C's business. They must name neither A
    // nor B nor any of their amounts.
    let mut seen_by_c = Vec::<(String, Vec<u8>)>::new();
    seen.extend(refusals);
    // (a) every block, every field, and each envelope's raw bytes.
    let height = net.height(0).unwrap();
    for h in 1..=height {
        let block = net.rpc(0, "veil_getBlock", json!([h])).unwrap();
        assert_eq!(block["height"], h, "{block}");
        for tx in block["txs"].as_array().unwrap() {
            seen.push((
                format!("block {h} envelope"),
                hex::decode(tx.as_str().unwrap()).unwrap(),
            ));
        }
        seen.push((format!("veil_getBlock {h}"), block.to_string().into_bytes()));
    }
    // (b) what any caller gets from each validator, and what an unrelated wallet's own queries return.
    for i in 0..VALIDATORS {
        for method in ["veil_status", "veil_networkKeys"] {
            let v = net.rpc(i, method, json!([])).unwrap();
            seen.push((format!("{method} of validator {i}"), v.to_string().into_bytes()));
        }
        let (status, metrics) = nodes::http(net.rpc[i], "GET", "/metrics", "").unwrap();
        assert_eq!(status, 200);
        assert!(metrics.contains("veil_height"), "{metrics}");
        seen.push((format!("/metrics of validator {i}"), metrics.into_bytes()));
        for args in [&["balance"][..], &["history"]] {
            let v = net.wallet_ok(i, &wallet_c, args);
            seen_by_c.push((
                format!("wallet C {args:?} via validator {i}"),
                v.to_string().into_bytes(),
            ));
        }
    }
    let c_history = net.wallet_ok(0, &wallet_c, &["history"]);
    assert_eq!(
        c_history.as_array().map(Vec::len),
        Some(1),
        "C sees only its own transfer: {c_history}"
    );
    // (c) every file of every validator, and their logs, at rest (the nodes stopped: files a running node
    //     rotates could vanish under the scan).
    net.assert_running();
    net.kill_all();
    let mut files = Vec::new();
    for i in 0..VALIDATORS {
        files.extend(walk(&net.validator_dir(i)));
    }
    files.extend(net.log_files());
    let mut bytes_scanned = 0usize;
    for f in &files {
        let data = std::fs::read(f).unwrap();
        bytes_scanned += data.len();
        seen.push((f.display().to_string(), data));
    }
    let log_bytes: u64 = net
        .log_files()
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(
        log_bytes > 2_000,
        "the nodes logged almost nothing ({log_bytes} bytes): is trace logging on?"
    );
    let mut found = Vec::new();
    for (what, data) in &seen {
        for (name, needle) in needles.iter().chain(&demo_needles) {
            if contains(data, needle) {
                found.push(format!("{name} in {what}"));
            }
        }
    }
    for (what, data) in &seen_by_c {
        for (name, needle) in &needles {
            if contains(data, needle) {
                found.push(format!("{name} in {what}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the observer found confidential data:\n{}",
        found.join("\n")
    );
    eprintln!(
        "observer: {} blocks, {} RPC answers and {} files ({} MB, logs {} MB) hold none of {} needles",
        height,
        seen.len() + seen_by_c.len() - files.len(),
        files.len(),
        bytes_scanned / 1_000_000,
        log_bytes / 1_000_000,
        needles.len() + demo_needles.len()
    );
}

/// Waits until every validator reports the same digest and a state root at one height; panics if two
/// validators report different ones.
fn agree_at_common_height(net: &mut Net) -> u64 {
    net.wait_for(
        "all validators to report a state root at a common height",
        PROGRESS_LIMIT,
        |n| {
            let h = (0..VALIDATORS)
                .map(|i| n.height(i))
                .collect::<Option<Vec<_>>>()?
                .into_iter()
                .min()?;
            let blocks: Vec<Value> = (0..VALIDATORS)
                .map(|i| n.rpc(i, "veil_getBlock", json!([h])).unwrap())
                .collect();
            let digests: Vec<&Value> = blocks.iter().map(|b| &b["digest"]).collect();
            assert!(
                digests.iter().all(|d| *d == digests[0]),
                "validators disagree on block {h}: {blocks:?}"
            );
            let roots: Vec<&str> = blocks.iter().filter_map(|b| b["state_root"].as_str()).collect();
            if roots.len() < VALIDATORS {
                return None; // one of them no longer holds that root in memory; try a later height
            }
            assert!(
                roots.iter().all(|r| *r == roots[0]),
                "validators disagree on the state root at {h}: {blocks:?}"
            );
            Some(h)
        },
    )
}

/// Submits each kind of bad envelope to validator 0 and checks its refusal; returns the answers (all
/// of which a non-owner sees) for the observer scan.
fn bad_input(net: &mut Net, poor_wallet: &Path) -> Vec<(String, Vec<u8>)> {
    let keys: NetworkKeys =
        serde_json::from_value(net.rpc(0, "veil_networkKeys", json!([])).unwrap()).unwrap();
    let demo = Wallet::load(&net.demo_wallet).unwrap();
    let poor = Wallet::load(poor_wallet).unwrap();
    let demo_nonce = net.wallet_ok(0, &net.demo_wallet, &["balance"])["nonce"]
        .as_u64()
        .unwrap();
    let to = Wallet::generate().unwrap().address();
    let good = demo.seal_transfer(&keys, demo_nonce, to, 1).unwrap().envelope;
    let mut wrong_epoch = good.clone();
    wrong_epoch[1..9].copy_from_slice(&(keys.epoch + 5).to_be_bytes());
    let badly_signed = {
        let body = veil_ledger::TxBody {
            chain_id_hash: keys.genesis_hash_bytes().unwrap(),
            sender: demo.key().verifying_key(),
            nonce: demo_nonce,
            fee: 1_000,
            kind: veil_ledger::TxKind::Transfer { to, amount: 1 },
        };
        let forger = veil_crypto::sign::SigningKey::generate().unwrap();
        let signed = veil_ledger::SignedTx::sign(&forger, body);
        veil_ledger::seal_signed(&signed, &keys.tx_public().unwrap(), keys.epoch)
            .unwrap()
            .encode()
    };
    let poor_balance = net.wallet_ok(0, poor_wallet, &["balance"]);
    let over_balance = poor
        .seal_transfer(&keys, poor_balance["nonce"].as_u64().unwrap(), to, TO_C * 1_000)
        .unwrap()
        .envelope;
    // A transfer that committed: the first envelope in the chain.
    let replayed = (1..=net.height(0).unwrap())
        .find_map(|h| {
            let b = net.rpc(0, "veil_getBlock", json!([h])).unwrap();
            b["txs"]
                .as_array()
                .and_then(|t| t.first())
                .map(|t| t.as_str().unwrap().to_owned())
        })
        .expect("a committed envelope");
    let cases: Vec<(&str, String, i64, &str)> = vec![
        ("malformed hex", "zz-not-hex".into(), -32602, "hex"),
        (
            "truncated",
            hex::encode(&good[..good.len() / 2]),
            -32010,
            "malformed",
        ),
        ("oversized", hex::encode(vec![1u8; 5_000]), -32010, "oversize"),
        ("wrong epoch", hex::encode(&wrong_epoch), -32010, "wrong_epoch"),
        ("replayed", replayed, -32010, "nonce_used"),
        (
            "badly signed",
            hex::encode(&badly_signed),
            -32010,
            "bad_signature",
        ),
        (
            "over balance",
            hex::encode(&over_balance),
            -32010,
            "insufficient_balance",
        ),
    ];
    let before = net.height(0).unwrap();
    let mut answers = Vec::new();
    for (what, param, code, reason) in cases {
        let Err(e) = net.rpc(0, "veil_submit", json!([param])) else {
            panic!("the {what} envelope was admitted");
        };
        assert_eq!(e.code, code, "{what}: {e:?}");
        assert!(e.message.len() > 10, "{what}: unclear message {e:?}");
        if code == -32010 {
            assert_eq!(e.data["reason"], reason, "{what}: {e:?}");
        } else {
            assert!(e.message.contains(reason), "{what}: {e:?}");
        }
        eprintln!("{what}: refused: {} ({})", e.message, e.data);
        answers.push((
            format!("refusal of the {what} envelope"),
            format!("{} {}", e.message, e.data).into_bytes(),
        ));
    }
    // None of it stopped a validator, and the chain still finalizes.
    net.assert_running();
    for i in 0..VALIDATORS {
        net.wait_height(i, before + 2, PROGRESS_LIMIT);
    }
    answers
}

type Needles = Vec<(String, Vec<u8>)>;

/// The byte strings an observer must not find for these wallets and amounts.
fn needles(wallets: &[(&Path, &str)], amounts: &[u64]) -> Needles {
    let mut out = Vec::new();
    for (path, address) in wallets {
        out.extend(needles_of_wallet(path, address));
    }
    for a in amounts {
        out.push((format!("amount {a} (decimal)"), a.to_string().into_bytes()));
        out.push((
            format!("amount {a} (with separators)"),
            veil_client::ledger::format_amount(*a).into_bytes(),
        ));
        out.push((format!("amount {a} (u64 LE)"), a.to_le_bytes().to_vec()));
        out.push((format!("amount {a} (u64 BE)"), a.to_be_bytes().to_vec()));
    }
    out
}

fn needles_of_wallet(path: &Path, address: &str) -> Needles {
    let wallet = Wallet::load(path).unwrap();
    assert_eq!(wallet.address().to_string(), address);
    let public = wallet.key().verifying_key().to_bytes();
    vec![
        (format!("address {address}"), address.as_bytes().to_vec()),
        (format!("raw address of {address}"), wallet.address().0.to_vec()),
        (format!("public key of {address}"), public.to_vec()),
        (
            format!("hex public key of {address}"),
            hex::encode(public).into_bytes(),
        ),
        (
            format!("HEX public key of {address}"),
            hex::encode_upper(public).into_bytes(),
        ),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The scanner is not blind: each needle planted in noise, in a file found by the directory walk, is found.
fn scanner_finds_planted_needles(root: &Path, needles: &Needles) {
    let plant = root.join("planted");
    std::fs::create_dir_all(plant.join("deep")).unwrap();
    for (k, (name, needle)) in needles.iter().enumerate() {
        let mut data = vec![0xA5u8; 1000 + k];
        data.extend_from_slice(needle);
        data.extend_from_slice(&[0x5Au8; 333]);
        let file = plant.join("deep").join(format!("{k}.bin"));
        std::fs::write(&file, &data).unwrap();
        let found = walk(&plant)
            .iter()
            .any(|f| contains(&std::fs::read(f).unwrap(), needle));
        assert!(found, "the scanner misses a planted {name}");
        std::fs::remove_file(&file).unwrap();
    }
    assert!(!contains(b"nothing here", b"veil1"));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
