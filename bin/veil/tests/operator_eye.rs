//! The operator's eye: everything a worker's operator can observe during a confidential chat holds neither
//! the prompt, nor the answer, nor any 64-byte window of the model's GGUF.
//!
//! The real binaries and the real model: `veil model seal` → `veil worker serve` (simulated TEE) →
//! `veil worker provision` → `veil gateway` → a whole and a streamed chat completion. The operator's view
//! is captured in full:
//!
//! - **traffic**: a recording TCP proxy (in this test, 127.0.0.1, an OS-chosen port) sits between the
//!   gateway (and the provisioning command) and the worker; every byte in both directions of every
//!   connection is recorded before it is forwarded;
//! - **logs**: the worker's stdout and stderr, with every log target at trace level (`VEIL_LOG=trace`, the
//!   filter `veil` reads; `RUST_LOG=trace` too, in case anything reads that);
//! - **files the worker writes**: the worker runs with an empty environment except a `PATH`, its working
//!   directory, `HOME`, `TMPDIR` and the XDG directories all inside one fresh directory, and its
//!   `--data-dir` (the simulated TEE's key) there too; after it stops, every file under that directory is
//!   read. The blob store is *not* among them: it is the operator's storage, filled by `veil model seal`
//!   before the worker starts, and the worker only reads the bundle from it. It is checked on its own: it
//!   holds exactly the sealed bundle, byte for byte, and no 64-byte window of the GGUF (ciphertext only).
//!
//! Each detector is shown to work on planted data in the same run (a canary), so the test can fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod common;
use common::http;

/// A prompt that cannot be in any log by chance: two made-up names and an odd number.
const PROMPT: &str = "My neighbour Zorblatt Quennifer keeps exactly seventeen violet axolotls in a copper \
                      bathtub. Write a short story about Zorblatt Quennifer and the axolotls.";
/// Made-up words of the prompt: none may appear anywhere, not even alone (a prompt logged word by word).
const MADE_UP: [&str; 2] = ["Zorblatt", "Quennifer"];

fn veil() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veil"));
    cmd.env_remove("VEIL_LOG");
    cmd
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run veil");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

// ---------------------------------------------------------------------------------------------------------
// The recording proxy.

/// One direction of one proxied connection, as recorded.
type Record = Arc<Mutex<Vec<u8>>>;

/// A TCP proxy to `upstream` that records every byte of every connection, each direction apart.
struct Proxy {
    addr: SocketAddr,
    records: Arc<Mutex<Vec<(String, Record)>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let records: Arc<Mutex<Vec<(String, Record)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (recs, halt) = (records.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                // If the worker cannot be reached, dropping `client` shows the gateway a closed connection.
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (up, down) = (Record::default(), Record::default());
                recs.lock().unwrap().extend([
                    (format!("connection {n}, to the worker"), up.clone()),
                    (format!("connection {n}, from the worker"), down.clone()),
                ]);
                pump(client.try_clone().unwrap(), server.try_clone().unwrap(), up);
                pump(server, client, down);
            }
        });
        Self {
            addr,
            records,
            stop,
            accept: Some(accept),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every direction of every connection so far.
    fn captured(&self) -> Vec<(String, Vec<u8>)> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .map(|(name, r)| (name.clone(), r.lock().unwrap().clone()))
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to`, recording each byte *before* forwarding it: whatever reached the other side is
/// in the record.
fn pump(mut from: TcpStream, mut to: TcpStream, record: Record) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    record.lock().unwrap().extend_from_slice(&buf[..n]);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

// ---------------------------------------------------------------------------------------------------------
// Processes.

/// A child process killed and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Stops the process with SIGINT (a clean stop: whatever it logs when stopping is captured too), and
    /// kills it if it is still running after 20 s.
    fn interrupt(mut self) {
        let pid = self.0.id();
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -INT {pid}")])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.0.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("the worker did not stop on SIGINT within 20 s; killing it");
    }
}

/// Waits for the first line of `stdout_file` (the URL the process prints when it listens).
fn first_line(stdout_file: &Path, child: &mut Child, stderr_file: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = std::fs::read_to_string(stdout_file).unwrap_or_default();
        if let Some((line, _)) = out.split_once('\n') {
            return line.trim().to_owned();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the worker exited ({status}) before listening: {}",
                std::fs::read_to_string(stderr_file).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "the worker printed no URL in 300 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `cmd` with a piped stdout and returns it with the first line it prints.
fn start_gateway(mut cmd: Command, stderr: &Path) -> (Proc, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .expect("spawn veil gateway");
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(
        !line.trim().is_empty(),
        "the gateway printed no URL: {}",
        std::fs::read_to_string(stderr).unwrap_or_default()
    );
    (proc, line.trim().to_owned())
}

/// Every file under `dir`, recursively (symlinks are not followed: they are listed, not read).
fn read_tree(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            read_tree(&path, out);
        } else if kind.is_file() {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        } else {
            let target = std::fs::read_link(&path)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            out.push((format!("{} (link)", path.display()), target.into_bytes()));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Detectors.

/// Polynomial rolling hash (mod 2^64, odd base) of every `w`-byte window of `data`: `f(start, hash)`.
/// Bytes are offset by one so that leading zero bytes still change the hash.
fn rolling(data: &[u8], w: usize, mut f: impl FnMut(usize, u64)) {
    const BASE: u64 = 0x0000_0100_0000_01b3;
    if data.len() < w {
        return;
    }
    let top = BASE.wrapping_pow(u32::try_from(w - 1).unwrap());
    let mut h = 0u64;
    for &b in &data[..w] {
        h = h.wrapping_mul(BASE).wrapping_add(u64::from(b) + 1);
    }
    f(0, h);
    for i in w..data.len() {
        h = h
            .wrapping_sub((u64::from(data[i - w]) + 1).wrapping_mul(top))
            .wrapping_mul(BASE)
            .wrapping_add(u64::from(data[i]) + 1);
        f(i - w + 1, h);
    }
}

/// A window made of one repeated byte (64 zero bytes, 64 spaces…). Such a window says nothing about the
/// model: the GGUF has zero runs (alignment padding, zero weights) and so can any file, evidence (zeroed
/// fields) or log (a line of dashes). These, and only these, are not looked for; every window with two
/// distinct byte values is. A leak of model content is never 64 copies of one byte, so this exclusion
/// cannot hide one — and the canary below is a window of real, varied GGUF bytes.
fn is_constant(w: &[u8]) -> bool {
    w.iter().all(|&b| b == w[0])
}

const WINDOW: usize = 64;

/// Where a window of the model was found: the haystack, the offset there, the offset in the GGUF.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GgufHit {
    haystack: String,
    at: usize,
    gguf_offset: usize,
}

/// Finds every 64-byte window of `gguf` that occurs in one of the (small) `haystacks`.
///
/// Indexing the GGUF's ~10^8 windows would take gigabytes; the haystacks (traffic, logs, the worker's
/// files: a few MB at most) are indexed instead — a hash of each of their 64-byte windows, with a 2^24-bit
/// prefilter — and the GGUF is scanned once with a rolling hash. Every candidate is confirmed byte for byte,
/// so a hash collision is never reported. Reports at most a few hits per haystack.
fn gguf_windows_in(gguf: &[u8], haystacks: &[(String, Vec<u8>)]) -> Vec<GgufHit> {
    const FILTER_BITS: u32 = 24;
    let mut filter = vec![0u64; 1 << (FILTER_BITS - 6)];
    let slot = |h: u64| (h >> (64 - FILTER_BITS)) as usize;
    // hash → (haystack, offset) of its first occurrence.
    let mut index: HashMap<u64, (usize, usize)> = HashMap::new();
    for (i, (_, hay)) in haystacks.iter().enumerate() {
        rolling(hay, WINDOW, |at, h| {
            if !is_constant(&hay[at..at + WINDOW]) {
                index.entry(h).or_insert((i, at));
                let s = slot(h);
                filter[s >> 6] |= 1 << (s & 63);
            }
        });
    }
    let mut hits: Vec<GgufHit> = Vec::new();
    let mut per_haystack = vec![0usize; haystacks.len()];
    rolling(gguf, WINDOW, |off, h| {
        let s = slot(h);
        if filter[s >> 6] & (1 << (s & 63)) == 0 {
            return;
        }
        let Some(&(i, at)) = index.get(&h) else { return };
        let hay = &haystacks[i].1;
        if hay[at..at + WINDOW] == gguf[off..off + WINDOW] && per_haystack[i] < 8 {
            per_haystack[i] += 1;
            hits.push(GgufHit {
                haystack: haystacks[i].0.clone(),
                at,
                gguf_offset: off,
            });
        }
    });
    hits
}

/// A stretch of `big` equal to a stretch of the GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    at: usize,
    gguf_offset: usize,
    len: usize,
}

impl Run {
    /// Whether this run holds the GGUF window at `gguf_offset` planted at `at`. (A run may reach a byte or
    /// two beyond what was planted, where the neighbours happen to agree.)
    fn covers(&self, at: usize, gguf_offset: usize) -> bool {
        at.checked_sub(self.at) == gguf_offset.checked_sub(self.gguf_offset)
            && self.at <= at
            && at + WINDOW <= self.at + self.len
    }
}

/// Whether `big` (the ~100 MB bundle, too large to index by window) contains a 64-byte window of `gguf`.
///
/// Any 64-byte stretch of the GGUF wholly contains a 32-byte block that starts at a multiple of 32. Those
/// blocks (~3·10^6, a sorted table of hashes behind a prefilter) are indexed, `big` is scanned for them
/// with a rolling hash, and a candidate counts only if the common run around it, confirmed byte for byte,
/// is at least 64 bytes long. Blocks of one repeated byte are not indexed (see [`is_constant`]).
fn gguf_window_in_big(gguf: &[u8], big: &[u8]) -> Option<Run> {
    const BLOCK: usize = 32;
    const FILTER_BITS: u32 = 27;
    let mut filter = vec![0u64; 1 << (FILTER_BITS - 6)];
    let slot = |h: u64| (h >> (64 - FILTER_BITS)) as usize;
    let mut table: Vec<(u64, u32)> = Vec::with_capacity(gguf.len() / BLOCK);
    for (k, block) in gguf.chunks_exact(BLOCK).enumerate() {
        if is_constant(block) {
            continue;
        }
        let mut h = 0u64;
        rolling(block, BLOCK, |_, x| h = x);
        table.push((h, u32::try_from(k).unwrap()));
        let s = slot(h);
        filter[s >> 6] |= 1 << (s & 63);
    }
    table.sort_unstable();
    let mut found = None;
    rolling(big, BLOCK, |at, h| {
        if found.is_some() {
            return;
        }
        let s = slot(h);
        if filter[s >> 6] & (1 << (s & 63)) == 0 {
            return;
        }
        let first = table.partition_point(|&(x, _)| x < h);
        for &(_, k) in table[first..].iter().take_while(|&&(x, _)| x == h) {
            let g = k as usize * BLOCK;
            if big[at..at + BLOCK] != gguf[g..g + BLOCK] {
                continue;
            }
            let left = (1..=at.min(g))
                .take_while(|&d| big[at - d] == gguf[g - d])
                .count();
            let right = (0..(big.len() - at).min(gguf.len() - g))
                .take_while(|&d| big[at + d] == gguf[g + d])
                .count();
            if left + right >= WINDOW {
                found = Some(Run {
                    at: at - left,
                    gguf_offset: g - left,
                    len: left + right,
                });
                return;
            }
        }
    });
    found
}

/// The byte strings whose presence in a haystack means the prompt or the answer leaked.
///
/// For each secret text, in its raw form and JSON-escaped (logs and JSON bodies escape quotes and line
/// breaks): the whole text, and every 24-byte window of it with at least 16 ASCII letters or digits. A
/// whole answer could in principle be a few common words; a 24-byte run of real words, copied verbatim,
/// does not occur by chance in logs of sizes, timings, hex keys and fixed messages — while a window of
/// mostly spaces and punctuation might, so those are not looked for. The prompt's made-up words are looked
/// for on their own as well, which also catches a prompt (or an answer repeating them) logged in pieces.
fn needles(secrets: &[&str]) -> HashSet<Vec<u8>> {
    const W: usize = 24;
    let mut out = HashSet::new();
    for s in secrets {
        let escaped = serde_json::to_string(s).unwrap();
        let escaped = &escaped[1..escaped.len() - 1];
        for form in [*s, escaped] {
            let b = form.trim().as_bytes();
            if b.len() >= 12 {
                out.insert(b.to_vec());
            }
            for w in b.windows(W) {
                if w.iter().filter(|c| c.is_ascii_alphanumeric()).count() >= 16 {
                    out.insert(w.to_vec());
                }
            }
        }
    }
    for w in MADE_UP {
        out.insert(w.as_bytes().to_vec());
    }
    out
}

/// Every needle found in every haystack: `(haystack, needle)`.
fn find_needles(needles: &HashSet<Vec<u8>>, haystacks: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let mut by_len: HashMap<usize, HashSet<&[u8]>> = HashMap::new();
    for n in needles {
        by_len.entry(n.len()).or_default().insert(n);
    }
    let mut found = Vec::new();
    for (name, hay) in haystacks {
        for (len, set) in &by_len {
            for w in hay.windows(*len) {
                if set.contains(w) {
                    found.push((name.clone(), w.to_vec()));
                    break;
                }
            }
        }
    }
    found
}

/// Found needles, printable.
fn readable(found: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
    found
        .iter()
        .map(|(h, n)| (h.clone(), String::from_utf8_lossy(n).into_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// The test.

fn chat_body(stream: bool) -> String {
    serde_json::json!({
        "model": "smollm2",
        "temperature": 0,
        "max_tokens": 48,
        "stream": stream,
        "messages": [{ "role": "user", "content": PROMPT }],
    })
    .to_string()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn the_operator_sees_no_prompt_no_answer_and_no_model() {
    let model = PathBuf::from(run_ok(veil().args(["model", "fetch"])));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (sealing, blobs, logs, worker_dir) = (
        d.join("sealing"),
        d.join("operator-blobs"),
        d.join("logs"),
        d.join("worker"),
    );
    for p in [&sealing, &logs, &worker_dir] {
        std::fs::create_dir_all(p).unwrap();
    }
    let bundle = sealing.join("smollm2.bundle");
    let address = run_ok(
        veil()
            .args(["model", "seal"])
            .arg(&model)
            .arg("--out")
            .arg(&bundle)
            .arg("--blobs")
            .arg(&blobs),
    );
    assert!(address.starts_with("sha256:"), "{address}");
    let key_file = sealing.join("smollm2.bundle.key");

    // The worker: nothing from this test's environment but PATH; everything it could write points into
    // `worker_dir`; every log target at trace level; stdout and stderr captured whole into files.
    let (stdout_file, stderr_file) = (logs.join("worker.stdout"), logs.join("worker.stderr"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veil"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("VEIL_LOG", "trace")
        .env("RUST_LOG", "trace")
        .current_dir(&worker_dir);
    for (var, sub) in [
        ("HOME", "home"),
        ("TMPDIR", "tmp"),
        ("XDG_DATA_HOME", "xdg-data"),
        ("XDG_CONFIG_HOME", "xdg-config"),
        ("XDG_CACHE_HOME", "xdg-cache"),
        ("XDG_STATE_HOME", "xdg-state"),
        ("XDG_RUNTIME_DIR", "xdg-runtime"),
    ] {
        let p = worker_dir.join(sub);
        std::fs::create_dir_all(&p).unwrap();
        cmd.env(var, p);
    }
    cmd.args(["worker", "serve", "--threads", "2", "--ctx", "1024"])
        .arg("--blobs")
        .arg(&blobs)
        .arg("--model")
        .arg(format!("smollm2={address}"))
        .arg("--data-dir")
        .arg(worker_dir.join("data"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_file).unwrap())
        .stderr(std::fs::File::create(&stderr_file).unwrap());
    let mut child = cmd.spawn().expect("spawn veil worker");
    let worker_url = first_line(&stdout_file, &mut child, &stderr_file);
    let worker = Proc(child);
    let upstream: SocketAddr = worker_url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{worker_url}"))
        .parse()
        .unwrap();

    // Everything goes to the worker through the recording proxy: provisioning and the gateway.
    let proxy = Proxy::start(upstream);
    run_ok(
        veil()
            .args(["worker", "provision", "--worker", &proxy.url()])
            .args(["--model", "smollm2", "--bundle", &address, "--allow-simulated"])
            .arg("--key-file")
            .arg(&key_file),
    );
    let mut cmd = veil();
    cmd.args(["gateway", "--allow-simulated", "--worker", &proxy.url()]);
    let (gateway, base) = start_gateway(cmd, &logs.join("gateway.stderr"));

    // A whole answer, then the same request streamed.
    let whole = http(
        "POST",
        &format!("{base}/chat/completions"),
        Some(&chat_body(false)),
    );
    assert_eq!(whole.status, 200, "{}", whole.body);
    let v = json(&whole.body);
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    assert!(
        answer.trim().len() >= 40,
        "the answer is too short to be a meaningful secret: {answer:?}"
    );
    let streamed = http(
        "POST",
        &format!("{base}/chat/completions"),
        Some(&chat_body(true)),
    );
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    let text: String = streamed
        .body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| {
            json(e)["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, answer, "greedy: the streamed answer is the whole answer");

    // Stop everything, so that all traffic and logs are complete.
    drop(gateway);
    worker.interrupt();
    let traffic = proxy.captured();
    drop(proxy);
    assert!(
        traffic.len() >= 4,
        "the proxy saw {} directions of traffic; the gateway bypassed it?",
        traffic.len()
    );
    let total: usize = traffic.iter().map(|(_, t)| t.len()).sum();
    assert!(total > 1000, "only {total} bytes of traffic were captured");

    let stderr = std::fs::read(&stderr_file).unwrap();
    let log_text = String::from_utf8_lossy(&stderr);
    // The filter is `trace`; nothing in the worker emits TRACE events today, so DEBUG lines (llama.cpp's
    // own log among them) show that the low levels are really on.
    assert!(
        log_text.contains("DEBUG") && log_text.matches("request served").count() == 2,
        "the worker's log is not at a low level or missed the requests:\n{log_text}"
    );
    let mut worker_files = Vec::new();
    read_tree(&worker_dir, &mut worker_files);
    assert!(
        worker_files.iter().any(|(p, _)| p.contains("/data/")),
        "the worker wrote no file in its data directory (its simulated-TEE key is expected there): {:?}",
        worker_files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );

    let mut haystacks: Vec<(String, Vec<u8>)> = traffic;
    haystacks.push(("worker stdout".into(), std::fs::read(&stdout_file).unwrap()));
    haystacks.push(("worker stderr (trace log)".into(), stderr.clone()));
    haystacks.extend(worker_files);
    let sizes: Vec<String> = haystacks
        .iter()
        .map(|(n, h)| format!("{n}: {} bytes", h.len()))
        .collect();
    eprintln!("operator's view:\n  {}", sizes.join("\n  "));

    // 1. The prompt and the answer.
    let secrets = needles(&[PROMPT, &answer]);
    eprintln!("answer: {answer:?}; {} needles looked for", secrets.len());
    // The detector finds them where they are in clear: the user's own HTTP answer from the gateway.
    let user_side = vec![
        (
            "the gateway's whole answer".to_owned(),
            whole.body.clone().into_bytes(),
        ),
        (
            "the gateway's stream".to_owned(),
            streamed.body.clone().into_bytes(),
        ),
    ];
    let seen = find_needles(&secrets, &user_side);
    assert!(
        seen.iter().any(|(h, _)| h.contains("whole")),
        "self-check: the answer's windows are not found in the gateway's own answer"
    );
    // …and in a copy of the worker's log with one 24-byte window of the answer planted in it.
    let window = answer
        .as_bytes()
        .windows(24)
        .find(|w| secrets.contains(*w))
        .expect("the answer has a 24-byte window to look for")
        .to_vec();
    let mut planted = stderr.clone();
    planted.splice(planted.len() / 2..planted.len() / 2, window.iter().copied());
    assert!(
        find_needles(&secrets, &[("canary".into(), planted)])
            .iter()
            .any(|(_, n)| *n == window),
        "self-check: a planted answer window is not found"
    );
    let leaks = find_needles(&secrets, &haystacks);
    assert!(
        leaks.is_empty(),
        "the operator can see the prompt or the answer: {:#?}",
        readable(&leaks)
    );

    // 2. The data key: neither its bytes nor its hex.
    let key_hex = std::fs::read_to_string(&key_file).unwrap().trim().to_owned();
    let key_raw: Vec<u8> = (0..key_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&key_hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(key_raw.len(), 32, "the key file holds 64 hex digits");
    let key_needles: HashSet<Vec<u8>> = [key_hex.into_bytes(), key_raw].into_iter().collect();
    let leaks = find_needles(&key_needles, &haystacks);
    assert!(
        leaks.is_empty(),
        "the operator can see the data key: {:?}",
        readable(&leaks)
    );

    // 3. The model: no 64-byte window of the GGUF, with a canary proving the scan finds one.
    let gguf = std::fs::read(&model).unwrap();
    let canary_offset = (gguf.len() / 2..gguf.len() - WINDOW)
        .step_by(4099)
        .find(|&o| gguf[o..o + WINDOW].iter().collect::<HashSet<_>>().len() > 8)
        .expect("a varied window in the middle of the GGUF");
    let mut canary = stderr.clone();
    let mid = canary.len() / 3;
    canary.splice(
        mid..mid,
        gguf[canary_offset..canary_offset + WINDOW].iter().copied(),
    );
    haystacks.push(("canary".into(), canary));
    let started = Instant::now();
    let hits = gguf_windows_in(&gguf, &haystacks);
    eprintln!(
        "scanned {} GGUF windows in {:.1} s",
        gguf.len() - WINDOW + 1,
        started.elapsed().as_secs_f64()
    );
    assert!(
        hits.iter()
            .any(|h| h.haystack == "canary" && h.at == mid && h.gguf_offset == canary_offset),
        "self-check: the GGUF window planted at {mid} of the canary was not found: {hits:?}"
    );
    let leaks: Vec<&GgufHit> = hits.iter().filter(|h| h.haystack != "canary").collect();
    assert!(
        leaks.is_empty(),
        "the operator can see the model's bytes: {leaks:#?}"
    );

    // 4. The blob store holds the bundle, byte for byte the sealed one, and nothing of the plaintext.
    let mut stored = Vec::new();
    read_tree(&blobs, &mut stored);
    let sealed = std::fs::read(&bundle).unwrap();
    assert_eq!(
        stored.len(),
        1,
        "the blob store should hold exactly the bundle: {:?}",
        stored.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    assert!(stored[0].0.ends_with(address.trim_start_matches("sha256:")));
    assert!(stored[0].1 == sealed, "the stored blob is not the sealed bundle");
    assert!(!sealed.starts_with(b"GGUF"));
    let mut planted = sealed[..1 << 20].to_vec();
    planted.splice(
        4321..4321,
        gguf[canary_offset..canary_offset + WINDOW].iter().copied(),
    );
    let run = gguf_window_in_big(&gguf, &planted);
    assert!(
        run.is_some_and(|r| r.covers(4321, canary_offset)),
        "self-check: a GGUF window planted in ciphertext is not found: {run:?}"
    );
    assert_eq!(
        gguf_window_in_big(&gguf, &stored[0].1),
        None,
        "the blob store holds plaintext of the model"
    );
}

#[test]
fn detectors_find_what_is_planted_and_ignore_constant_runs() {
    // A pseudo-random "model" with a zero run, and haystacks around copies of its windows.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut model: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    model[1000..1200].fill(0);
    let mut log = b"INFO request served request_bytes=4096 ".repeat(50);
    log.extend([0u8; 100]); // 100 zero bytes: shared with the model's zero run, but says nothing about it
    let clean = vec![("log".to_owned(), log.clone())];
    assert!(gguf_windows_in(&model, &clean).is_empty());
    let mut leaky = log.clone();
    leaky.extend_from_slice(&model[77_777..77_777 + 64]);
    let hits = gguf_windows_in(&model, &[("leaky".to_owned(), leaky.clone())]);
    assert_eq!(
        hits,
        vec![GgufHit {
            haystack: "leaky".into(),
            at: log.len(),
            gguf_offset: 77_777
        }]
    );
    // 63 bytes are not a window.
    let mut short = log.clone();
    short.extend_from_slice(&model[77_777..77_777 + 63]);
    assert!(gguf_windows_in(&model, &[("short".to_owned(), short.clone())]).is_empty());

    // The block scan of large data: unaligned windows, and nothing for 63 bytes or zero runs.
    let mut big = vec![0u8; 300_000];
    assert_eq!(gguf_window_in_big(&model, &big), None);
    for off in [0usize, 5, 31, 32, 199_936] {
        big[123_457..123_457 + 64].copy_from_slice(&model[off..off + 64]);
        let run = gguf_window_in_big(&model, &big);
        assert!(run.is_some_and(|r| r.covers(123_457, off)), "{off}: {run:?}");
        big[123_457..123_457 + 64].fill(0);
    }
    big[9..9 + 63].copy_from_slice(&model[5000..5063]);
    assert_eq!(gguf_window_in_big(&model, &big), None);

    // Text needles.
    let n = needles(&["The violet axolotls swam in circles around the copper tub."]);
    let hay = |s: &str| vec![("h".to_owned(), s.as_bytes().to_vec())];
    assert!(find_needles(&n, &hay("served 17 tokens in 300 ms")).is_empty());
    assert_eq!(
        find_needles(&n, &hay("x=\"axolotls swam in circles arou\"")).len(),
        1
    );
    assert_eq!(find_needles(&n, &hay("name=Zorblatt")).len(), 1);
}
