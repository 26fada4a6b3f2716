//! `veil devnet`, the README's main command, end to end with the real binary and the real model: it
//! starts, prints the OpenAI base URL, answers a chat completion through gateway → worker (simulated TEE,
//! marked in every response), brings up 4 validator processes that finalize, prints their RPC addresses
//! and a funded demo wallet (the printed `balance` command works, and a transfer from the demo wallet to a
//! new wallet commits through the `veil wallet` CLI), and stops cleanly with exit 0 on SIGINT and on
//! SIGTERM, validators included. A second start with the same directories reuses the sealed bundle
//! instead of encrypting the model again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a start (seal and load included) may take on a slow, busy machine.
const START_LIMIT: Duration = Duration::from_secs(600);
/// How long a clean stop may take.
const STOP_LIMIT: Duration = Duration::from_secs(30);

fn veil() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veil"));
    cmd.env_remove("VEIL_LOG");
    cmd
}

/// The model fetched (once, shared with the other tests) into the default data directory.
fn model_path() -> PathBuf {
    let out: Output = veil().args(["model", "fetch"]).output().expect("run veil");
    assert!(
        out.status.success(),
        "veil model fetch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A running `veil devnet`, killed and reaped if the test fails before it stops.
struct Devnet {
    child: Child,
    stderr: PathBuf,
    stdout: String,
    base: String,
    /// The validators' JSON-RPC addresses (`IP:port`).
    validators: Vec<String>,
    /// The demo wallet's key file.
    demo_wallet: PathBuf,
}

impl Devnet {
    /// Starts `veil devnet` and waits for its base URL on stdout.
    fn start(data_dir: &Path, state_dir: &Path, stderr: &Path) -> Self {
        let log = std::fs::File::create(stderr).unwrap();
        let mut child = veil()
            .args(["devnet", "--threads", "2", "--ctx", "1024", "--data-dir"])
            .arg(data_dir)
            .arg("--state-dir")
            .arg(state_dir)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn veil devnet");
        let stdout = child.stdout.take().unwrap();
        let mut devnet = Self {
            child,
            stderr: stderr.to_owned(),
            stdout: String::new(),
            base: String::new(),
            validators: Vec::new(),
            demo_wallet: PathBuf::new(),
        };
        // Read stdout on a thread so that a devnet that never gets ready fails the test in bounded time.
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    devnet.stdout.push_str(&line);
                    devnet.stdout.push('\n');
                    if let Some(base) = line.strip_prefix("OpenAI base URL: ") {
                        devnet.base = base.trim().to_owned();
                    }
                    if line.starts_with("Validator ")
                        && let Some((_, url)) = line.split_once(" JSON-RPC: http://")
                    {
                        devnet.validators.push(url.trim_end_matches('/').to_owned());
                    }
                    if line.starts_with("Demo wallet: ")
                        && let Some((_, key)) = line.split_once(", key file ")
                    {
                        devnet.demo_wallet = PathBuf::from(key.trim());
                    }
                    // The lines after the URL are the ready-to-paste examples; the last one says how to stop.
                    if line.starts_with("Ctrl-C") {
                        break;
                    }
                }
                Err(e) => panic!(
                    "veil devnet did not get ready ({e}); stdout:\n{}\nstderr:\n{}",
                    devnet.stdout,
                    devnet.log()
                ),
            }
        }
        assert!(
            devnet.base.starts_with("http://127.0.0.1:") && devnet.base.ends_with("/v1"),
            "{}",
            devnet.stdout
        );
        assert_eq!(devnet.validators.len(), 4, "{}", devnet.stdout);
        assert!(devnet.demo_wallet.is_file(), "{}", devnet.stdout);
        devnet
    }

    /// `veil wallet --json --rpc (validator i) --wallet FILE ARGS…`, which must succeed; its JSON.
    fn wallet(&self, i: usize, wallet: &Path, args: &[&str]) -> serde_json::Value {
        let out = veil()
            .args(["wallet", "--json", "--rpc", &self.validators[i], "--wallet"])
            .arg(wallet)
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "veil wallet {args:?} failed: {stdout}\n{}\ndevnet log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_str(stdout.trim()).unwrap()
    }

    /// Runs the printed `… wallet … balance` line; transfers from the demo wallet to a new wallet through
    /// the CLI and reads the new balance through another validator.
    fn use_the_ledger(&self, dir: &Path) {
        let line = self
            .stdout
            .lines()
            .find(|l| l.contains(" wallet --wallet ") && l.trim_end().ends_with(" balance"))
            .unwrap_or_else(|| panic!("no balance command printed:\n{}", self.stdout));
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], env!("CARGO_BIN_EXE_veil"), "{line}");
        let out = veil().args(&words[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("balance 1,000,000,000"),
            "{line}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let mine = dir.join(format!("mine-{}.key", self.child.id()));
        let created = veil()
            .args(["wallet", "--json", "--wallet"])
            .arg(&mine)
            .arg("new")
            .output()
            .unwrap();
        assert!(created.status.success());
        let address: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
        let address = address["address"].as_str().unwrap();
        let started = Instant::now();
        let sent = self.wallet(1, &self.demo_wallet, &["transfer", address, "4321"]);
        assert_eq!(sent["status"], "applied", "{sent}");
        assert_eq!(self.wallet(3, &mine, &["balance"])["balance"], 4321);
        eprintln!(
            "transfer from the demo wallet committed at height {} in {:?}",
            sent["height"],
            started.elapsed()
        );
    }

    /// After the devnet stopped: no validator answers any more.
    fn validators_gone(&self) {
        for v in &self.validators {
            let addr: std::net::SocketAddr = v.parse().unwrap();
            let deadline = Instant::now() + STOP_LIMIT;
            while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                assert!(
                    Instant::now() < deadline,
                    "validator {v} still answers after the devnet stopped"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends `signal` (`INT`, `TERM`) with `kill` and waits, bounded, for the exit.
    fn signal_and_wait(&mut self, signal: &str) -> (ExitStatus, Duration) {
        let started = Instant::now();
        // The shell's built-in `kill`: present wherever `sh` is, unlike /bin/kill.
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{signal} {}", self.child.id()))
            .status()
            .expect("run sh -c kill");
        assert!(status.success(), "kill -{signal} failed");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < STOP_LIMIT,
                "veil devnet did not stop within {STOP_LIMIT:?} of SIG{signal}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        // SIGTERM first, so that the devnet stops its validator processes too; SIGKILL if it hangs.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("kill -TERM {}", self.child.id()))
                .status();
            let deadline = Instant::now() + STOP_LIMIT;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A greedy chat completion asking for the capital of France; returns the answer and the time it took.
fn ask_france(devnet: &Devnet) -> (String, Duration) {
    let body = serde_json::json!({
        "model": "smollm2",
        "temperature": 0,
        "max_tokens": 30,
        "messages": [{ "role": "user", "content": "What is the capital of France?" }],
    })
    .to_string();
    let started = Instant::now();
    let reply = common::http("POST", &format!("{}/chat/completions", devnet.base), Some(&body));
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, devnet.log());
    assert!(
        reply.headers.contains("x-veil-attestation: simulated"),
        "{}",
        reply.headers
    );
    let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let text = v["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    assert!(text.contains("Paris"), "{text}");
    (text, took)
}

#[test]
fn devnet_answers_and_stops_cleanly_then_reuses_its_bundle() {
    let model = model_path();
    let data_dir = model.parent().and_then(Path::parent).unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");

    // First start: seals the model into the devnet's blob store.
    let started = Instant::now();
    let mut first = Devnet::start(&data_dir, &state, &dir.path().join("first.log"));
    let ready = started.elapsed();
    let log = first.log();
    for line in [
        "fetching model… done in",
        "sealing… done in",
        "worker up at http://127.0.0.1:",
        "SIMULATED TEE",
        "provisioning… model loaded in",
        "gateway up at http://127.0.0.1:",
        "ledger: finalizing (height",
    ] {
        assert!(log.contains(line), "no {line:?} in stderr:\n{log}");
    }
    let out = &first.stdout;
    assert!(
        out.contains(&format!("curl {}/chat/completions", first.base)),
        "{out}"
    );
    assert!(out.contains(&format!("OPENAI_BASE_URL={} ", first.base)), "{out}");
    let (text, latency) = ask_france(&first);
    eprintln!("first start: ready in {ready:?}; first answer in {latency:?}: {text:?}");
    first.use_the_ledger(dir.path());
    let (status, stop) = first.signal_and_wait("INT");
    assert!(status.success(), "exit {status:?} after SIGINT: {}", first.log());
    assert!(first.log().contains("stopped"), "{}", first.log());
    first.validators_gone();
    eprintln!("stopped {stop:?} after SIGINT");
    drop(first);

    // Second start, same directories: the bundle and key sealed the first time are reused.
    let started = Instant::now();
    let mut second = Devnet::start(&data_dir, &state, &dir.path().join("second.log"));
    let ready = started.elapsed();
    let log = second.log();
    assert!(
        log.contains("reusing the bundle sealed earlier"),
        "the second start did not reuse the bundle:\n{log}"
    );
    assert!(!log.contains("sealing… done in"), "{log}");
    let (_, latency) = ask_france(&second);
    eprintln!("second start: ready in {ready:?}; first answer in {latency:?}");
    let (status, _) = second.signal_and_wait("TERM");
    assert!(
        status.success(),
        "exit {status:?} after SIGTERM: {}",
        second.log()
    );
    second.validators_gone();

    // One bundle in the store.
    let blobs = walk(&state.join("blobs").join("sha256"));
    assert_eq!(blobs.len(), 1, "{blobs:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
