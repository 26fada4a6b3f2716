//! `veil devnet`, the README's main command, end to end with the real binary and the real model: it
//! starts, prints the OpenAI base URL, answers a chat completion through gateway → worker (simulated TEE,
//! marked in every response), and stops cleanly with exit 0 on SIGINT and on SIGTERM. A second start with
//! the same directories reuses the sealed bundle instead of encrypting the model again.

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
        devnet
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
    let (status, stop) = first.signal_and_wait("INT");
    assert!(status.success(), "exit {status:?} after SIGINT: {}", first.log());
    assert!(first.log().contains("stopped"), "{}", first.log());
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
