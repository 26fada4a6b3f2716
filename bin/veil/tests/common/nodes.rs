//! A local network of real `veil node` processes for the binary's end-to-end tests: `veil node init`
//! into a directory, every validator moved to ports the OS chose, processes started with their stdout
//! and stderr in files, a blocking JSON-RPC client, polling with backoff, and a guard that kills and
//! reaps every process it started (also when a test panics).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How many validators a test network has.
pub const VALIDATORS: usize = 4;

/// The built `veil` binary, with the user's log settings removed.
pub fn veil() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veil"));
    cmd.env_remove("VEIL_LOG")
        .env_remove("VEIL_RPC")
        .env_remove("VEIL_WALLET");
    cmd
}

/// `count` distinct loopback ports the OS reports free (all bound at once, then released).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Moves every validator of the network `veil node init` wrote in `dir` to the given loopback ports
/// (RPC then p2p per validator), keeping keys and everything else; validators 1.. fetch the seed
/// from validator 0's new RPC address.
pub fn rewrite_ports(dir: &Path, rpc: &[u16], p2p: &[u16]) {
    let addr = |p: u16| format!("127.0.0.1:{p}");
    for (i, (my_rpc, my_p2p)) in rpc.iter().zip(p2p).enumerate() {
        let path = dir.join(format!("validator-{i}/config.json"));
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for (j, peer) in config["validators"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .enumerate()
        {
            peer["rpc"] = json!(addr(rpc[j]));
            peer["p2p"] = json!(addr(p2p[j]));
        }
        config["rpc_listen"] = json!(addr(*my_rpc));
        config["p2p_listen"] = json!(addr(*my_p2p));
        if config["seed"].get("fetch").is_some() {
            config["seed"]["fetch"]["from"] = json!(addr(rpc[0]));
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    }
}

/// A JSON-RPC error answer.
#[derive(Debug, Clone)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Value,
}

/// One HTTP/1.1 request to `addr` with `Connection: close`; `Err` when the node is not reachable or
/// the answer is not HTTP.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8(raw).map_err(|e| format!("non-UTF-8 answer from {addr}: {e}"))?;
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not HTTP from {addr}: {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status from {addr}: {head:?}"))?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        crate::common::dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

/// Calls `method` on the validator at `addr`. The outer `Err` is a transport failure; the inner one a
/// JSON-RPC error.
pub fn rpc_call(addr: SocketAddr, method: &str, params: Value) -> Result<Result<Value, RpcError>, String> {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }).to_string();
    let (_, text) = http(addr, "POST", "/", &body)?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{method}: not JSON ({e}): {text}"))?;
    Ok(match v.get("error") {
        Some(e) => Err(RpcError {
            code: e["code"].as_i64().unwrap_or_default(),
            message: e["message"].as_str().unwrap_or_default().to_owned(),
            data: e.get("data").cloned().unwrap_or(Value::Null),
        }),
        None => Ok(v["result"].clone()),
    })
}

/// A running validator process.
struct Proc {
    child: Child,
}

/// A local network: its directory, its validators' addresses and processes. Dropping it kills (SIGKILL)
/// and reaps every process still running.
pub struct Net {
    pub dir: PathBuf,
    pub logs: PathBuf,
    pub rpc: Vec<SocketAddr>,
    pub demo_wallet: PathBuf,
    pub demo_address: String,
    log_filter: String,
    procs: Vec<Option<Proc>>,
    starts: Vec<u32>,
}

impl Net {
    /// `veil node init` into `root/net` (every validator on ports the OS chose), logs under `root/logs`.
    /// `log_filter` is the nodes' `--log`.
    pub fn init(root: &Path, log_filter: &str, demo_balance: u64) -> Self {
        let dir = root.join("net");
        let logs = root.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let out = veil()
            .args(["node", "init", "--validators", "4", "--demo-balance"])
            .arg(demo_balance.to_string())
            .arg("--dir")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "veil node init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        let ports = free_ports(2 * VALIDATORS);
        let (rpc, p2p) = ports.split_at(VALIDATORS);
        rewrite_ports(&dir, rpc, p2p);
        let demo_wallet = dir.join("demo-wallet.key");
        let demo_address = printed
            .split_whitespace()
            .map(|w| w.trim_matches(|c: char| c == '(' || c == ')' || c == ','))
            .find(|w| w.starts_with("veil1"))
            .unwrap_or_else(|| panic!("no demo address in `veil node init`'s output:\n{printed}"))
            .to_owned();
        Self {
            dir,
            logs,
            rpc: rpc
                .iter()
                .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
                .collect(),
            demo_wallet,
            demo_address,
            log_filter: log_filter.to_owned(),
            procs: (0..VALIDATORS).map(|_| None).collect(),
            starts: vec![0; VALIDATORS],
        }
    }

    /// Validator `i`'s directory (its key, config and data).
    pub fn validator_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("validator-{i}"))
    }

    fn log_path(&self, i: usize, stream: &str) -> PathBuf {
        self.logs.join(format!("validator-{i}.{stream}"))
    }

    /// Starts validator `i` (appending to its log files).
    pub fn start(&mut self, i: usize) {
        assert!(self.procs[i].is_none(), "validator {i} is already running");
        self.starts[i] += 1;
        let open = |p: PathBuf| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap();
            writeln!(f, "=== start {} ===", self.starts[i]).unwrap();
            f
        };
        let stdout: File = open(self.log_path(i, "stdout"));
        let stderr: File = open(self.log_path(i, "stderr"));
        let child = veil()
            .args([
                "--log",
                &self.log_filter,
                "node",
                "--seed-timeout",
                "120",
                "--config",
            ])
            .arg(self.validator_dir(i).join("config.json"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.procs[i] = Some(Proc { child });
    }

    /// Starts every validator.
    pub fn start_all(&mut self) {
        for i in 0..VALIDATORS {
            self.start(i);
        }
    }

    /// Kills validator `i` with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill(&mut self, i: usize) {
        let mut p = self.procs[i].take().expect("validator is running");
        p.child.kill().unwrap();
        p.child.wait().unwrap();
    }

    /// Kills (SIGKILL) and reaps every running validator.
    pub fn kill_all(&mut self) {
        for mut p in self.procs.iter_mut().filter_map(Option::take) {
            p.child.kill().unwrap();
            p.child.wait().unwrap();
        }
    }

    /// Panics with the nodes' log tails if a validator process has exited.
    pub fn assert_running(&mut self) {
        let exited = self.procs.iter_mut().enumerate().find_map(|(i, p)| {
            let status = p.as_mut()?.child.try_wait().unwrap()?;
            Some((i, status))
        });
        if let Some((i, status)) = exited {
            panic!("validator {i} exited ({status}):\n{}", self.tails());
        }
    }

    /// The last lines of every validator's stderr, for failure messages.
    pub fn tails(&self) -> String {
        let mut out = String::new();
        for i in 0..VALIDATORS {
            let text = std::fs::read_to_string(self.log_path(i, "stderr")).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(25);
            out.push_str(&format!(
                "--- validator {i} stderr (last {} lines) ---\n",
                lines.len() - from
            ));
            for l in &lines[from..] {
                // Debug logs can be long; keep the message readable.
                let l: String = l.chars().take(400).collect();
                out.push_str(&l);
                out.push('\n');
            }
        }
        out
    }

    /// Every log file of the validators.
    pub fn log_files(&self) -> Vec<PathBuf> {
        (0..VALIDATORS)
            .flat_map(|i| [self.log_path(i, "stdout"), self.log_path(i, "stderr")])
            .collect()
    }

    /// A JSON-RPC call to validator `i`; panics (with the log tails) on transport failure.
    pub fn rpc(&self, i: usize, method: &str, params: Value) -> Result<Value, RpcError> {
        rpc_call(self.rpc[i], method, params)
            .unwrap_or_else(|e| panic!("{method} on validator {i}: {e}\n{}", self.tails()))
    }

    /// `veil_status` of validator `i`, or `None` while it is not answering.
    pub fn status(&self, i: usize) -> Option<Value> {
        rpc_call(self.rpc[i], "veil_status", json!([]))
            .ok()
            .and_then(Result::ok)
    }

    /// Validator `i`'s executed height, or `None` while it is not answering.
    pub fn height(&self, i: usize) -> Option<u64> {
        self.status(i).and_then(|s| s["height"].as_u64())
    }

    /// Polls `check` with backoff (50 ms doubling up to 1 s) until it returns `Some` or `limit` passes;
    /// then panics with `what` and the nodes' log tails.
    pub fn wait_for<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            self.assert_running();
            assert!(
                started.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}:\n{}",
                self.tails()
            );
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Waits until validator `i` has executed `height`; returns the height it reports.
    pub fn wait_height(&mut self, i: usize, height: u64, limit: Duration) -> u64 {
        self.wait_for(&format!("validator {i} to reach height {height}"), limit, |n| {
            n.height(i).filter(|h| *h >= height)
        })
    }

    /// Runs `veil wallet --rpc (validator i) --wallet FILE --json ARGS…`; returns the output.
    pub fn wallet(&self, i: usize, wallet: &Path, args: &[&str]) -> Output {
        veil()
            .args(["wallet", "--json", "--rpc"])
            .arg(self.rpc[i].to_string())
            .arg("--wallet")
            .arg(wallet)
            .args(args)
            .output()
            .unwrap()
    }

    /// Like [`Net::wallet`], but panics with the output and the nodes' logs unless it succeeds; returns
    /// the JSON it printed.
    pub fn wallet_ok(&self, i: usize, wallet: &Path, args: &[&str]) -> Value {
        let out = self.wallet(i, wallet, args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "veil wallet {args:?} via validator {i} failed ({}):\nstdout: {stdout}\nstderr: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.tails()
        );
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("veil wallet {args:?}: not JSON ({e}): {stdout}"))
    }

    /// A new wallet file `root/NAME.key`; returns its path and address.
    pub fn new_wallet(&self, root: &Path, name: &str) -> (PathBuf, String) {
        let path = root.join(format!("{name}.key"));
        let out = veil()
            .args(["wallet", "--json", "--wallet"])
            .arg(&path)
            .arg("new")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (path, v["address"].as_str().unwrap().to_owned())
    }

    /// The balance the wallet reads through validator `i`.
    pub fn balance(&self, i: usize, wallet: &Path) -> u64 {
        self.wallet_ok(i, wallet, &["balance"])["balance"]
            .as_u64()
            .unwrap()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for p in self.procs.iter_mut().flatten() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}
