//! `veil attest …`: produce and verify attestation evidence.
//!
//! `veil attest verify` prints the claims of accepted evidence as JSON on stdout and exits 0. Rejected
//! evidence exits with status 3 and one line on stderr, `rejected: <reason>`. Unreadable files and bad
//! arguments exit 1 (clap's usage errors, 2).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use veil_attest::{
    AttestError, Collateral, DcapVerifier, Evidence, ExpectedReportData, HexBytes, Measurements, Policy,
    SimEvidence, SimVerifier, TcbStatus, decode_hex_or_raw, samples, verify_and_appraise,
};
use veil_platform::sim::{SimConfig, SimPlatform};

/// Exit status of rejected evidence.
pub const EXIT_REJECTED: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Verify evidence and print its claims as JSON (exit 0 accepted, 3 rejected).
    Verify(VerifyArgs),
    /// Produce simulated-TEE evidence (development only: it proves nothing) and print it as hex.
    Sim(SimArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// An Intel DCAP quote (TDX or SGX), raw binary or hex.
    #[arg(
        long,
        value_name = "FILE",
        requires = "collateral",
        conflicts_with = "evidence"
    )]
    pub quote: Option<PathBuf>,
    /// Intel collateral for the quote, as JSON (`QuoteCollateralV3`, as PCCS clients write it).
    #[arg(long, value_name = "FILE", requires = "quote")]
    pub collateral: Option<PathBuf>,
    /// Veil evidence: simulated (`veil attest sim`) or an evidence envelope, raw binary or hex.
    #[arg(long, value_name = "FILE")]
    pub evidence: Option<PathBuf>,
    /// Verify as of this time (unix seconds; default: now).
    #[arg(long, value_name = "UNIX")]
    pub now: Option<u64>,
    /// Also accept this TCB status (repeatable; UpToDate is always accepted).
    #[arg(long = "allow-status", value_name = "STATUS")]
    pub allow_status: Vec<String>,
    /// Accept platforms whose PCK certificate says "dynamic platform".
    #[arg(long)]
    pub allow_dynamic_platform: bool,
    /// Reject platforms with this advisory (repeatable), e.g. INTEL-SA-00615.
    #[arg(long = "block-advisory", value_name = "ID")]
    pub block_advisory: Vec<String>,
    /// Accept only these measurements (repeatable, one set each): `mrtd=HEX,rtmr0=HEX…`.
    #[arg(long = "allow-measurement", value_name = "NAME=HEX[,NAME=HEX…]")]
    pub allow_measurement: Vec<String>,
    /// Accept simulated-TEE evidence (development only).
    #[arg(long)]
    pub allow_simulated: bool,
    /// The verifier's nonce (hex); with --keys-hash, checks report_data = SHA-512("veil/v1/report" | nonce | keys hash).
    #[arg(
        long,
        value_name = "HEX",
        requires = "keys_hash",
        conflicts_with = "report_data"
    )]
    pub nonce: Option<String>,
    /// Hash of the bound public keys (32 bytes, hex).
    #[arg(long, value_name = "HEX", requires = "nonce")]
    pub keys_hash: Option<String>,
    /// Expect exactly this report data (64 bytes, hex).
    #[arg(long, value_name = "HEX")]
    pub report_data: Option<String>,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// The 64 bytes of report data to bind (hex, 128 digits).
    #[arg(long, value_name = "HEX")]
    pub report_data: String,
    /// Where the simulated TEE's dev key lives (default: Veil's data directory).
    #[arg(long, env = "VEIL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A configuration file whose bytes the simulated measurement covers.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

pub fn run(cmd: AttestCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AttestCommand::Verify(args) => verify(&args),
        AttestCommand::Sim(args) => sim(&args),
    }
}

fn unix_now() -> anyhow::Result<u64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("system clock before 1970")?
        .as_secs())
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} file {}", path.display()))
}

fn parse_hex<const N: usize>(s: &str, what: &str) -> anyhow::Result<[u8; N]> {
    let bytes =
        hex::decode(s.trim().trim_start_matches("0x")).with_context(|| format!("{what} is not hex"))?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{what} must be {N} bytes ({} hex digits), got {len}", 2 * N))
}

fn parse_measurement_set(spec: &str) -> anyhow::Result<Measurements> {
    let mut set = Measurements::new();
    for pair in spec.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("--allow-measurement {pair:?}: expected NAME=HEX"))?;
        let value =
            hex::decode(value.trim()).with_context(|| format!("--allow-measurement {name}: not hex"))?;
        set.insert(name.trim().to_ascii_lowercase(), HexBytes(value));
    }
    if set.is_empty() {
        bail!("--allow-measurement {spec:?} names no register");
    }
    Ok(set)
}

fn policy(args: &VerifyArgs) -> anyhow::Result<Policy> {
    let mut policy = Policy::default();
    for s in &args.allow_status {
        policy.allowed_tcb_statuses.insert(s.parse::<TcbStatus>()?);
    }
    policy.allow_dynamic_platform = args.allow_dynamic_platform;
    policy.blocked_advisories = args.block_advisory.iter().cloned().collect::<BTreeSet<_>>();
    if !args.allow_measurement.is_empty() {
        let sets = args
            .allow_measurement
            .iter()
            .map(|s| parse_measurement_set(s))
            .collect::<anyhow::Result<_>>()?;
        policy.allowed_measurements = Some(sets);
    }
    policy.allow_simulated = args.allow_simulated;
    Ok(policy)
}

fn expected(args: &VerifyArgs) -> anyhow::Result<ExpectedReportData> {
    Ok(match (&args.nonce, &args.keys_hash, &args.report_data) {
        (Some(nonce), Some(keys_hash), _) => {
            let nonce = hex::decode(nonce.trim().trim_start_matches("0x")).context("--nonce is not hex")?;
            ExpectedReportData::bound(&nonce, &parse_hex::<32>(keys_hash, "--keys-hash")?)
        }
        (_, _, Some(rd)) => ExpectedReportData::Exact(parse_hex::<64>(rd, "--report-data")?),
        _ => ExpectedReportData::Unchecked,
    })
}

fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let now = match args.now {
        Some(now) => now,
        None => unix_now()?,
    };
    let policy = policy(args)?;
    let expected = expected(args)?;
    let evidence = match (&args.quote, &args.collateral, &args.evidence) {
        (Some(quote), Some(collateral), None) => {
            let quote = decode_hex_or_raw(&read(quote, "quote")?);
            Collateral::from_json(&read(collateral, "collateral")?)
                .map(|collateral| Evidence::Dcap { quote, collateral })
        }
        (None, None, Some(path)) => Evidence::from_bytes(&decode_hex_or_raw(&read(path, "evidence")?)),
        _ => bail!("give either --quote FILE --collateral FILE, or --evidence FILE"),
    };
    match evidence.and_then(|ev| verify_and_appraise(&ev, &policy, &expected, now)) {
        Ok(claims) => {
            if claims.simulated {
                tracing::warn!(
                    "accepted SIMULATED evidence: it proves nothing about the machine that produced it"
                );
            }
            print_stdout(&serde_json::to_string_pretty(&claims)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(AttestError::InvalidPolicy(why)) => bail!("invalid policy: {why}"),
        Err(rejection) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("rejected: {}", rejection.reason());
            }
            Ok(ExitCode::from(EXIT_REJECTED))
        }
    }
}

fn sim(args: &SimArgs) -> anyhow::Result<ExitCode> {
    let report_data = parse_hex::<64>(&args.report_data, "--report-data")?;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => veil_models::default_data_dir()?,
    };
    let mut config = SimConfig::new(data_dir);
    if let Some(path) = &args.config {
        config.config = read(path, "configuration")?;
    }
    let platform = SimPlatform::start(config)?;
    let veil_platform::RawEvidence::Simulated(bytes) = platform.evidence_at(&report_data, unix_now()?) else {
        bail!("the simulated platform produced non-simulated evidence");
    };
    print_stdout(&hex::encode(bytes));
    Ok(ExitCode::SUCCESS)
}

fn print_stdout(text: &str) {
    #[allow(clippy::print_stdout)]
    {
        println!("{text}");
    }
}

/// Times `iterations` runs of `f` after a short warm-up; returns microseconds per run.
fn time_us(iterations: u32, mut f: impl FnMut() -> bool) -> anyhow::Result<f64> {
    for _ in 0..iterations.clamp(1, 10) {
        if !f() {
            bail!("warm-up run failed");
        }
    }
    let start = Instant::now();
    for _ in 0..iterations {
        if !f() {
            bail!("timed run failed");
        }
    }
    let elapsed: Duration = start.elapsed();
    Ok(elapsed.as_secs_f64() * 1e6 / f64::from(iterations.max(1)))
}

/// DCAP verifications per second over `dcap-qvl`'s real sample quotes (each verified at a time inside
/// its collateral's validity), with the simulated TEE's verification measured in the same run as the
/// baseline. Goal: one DCAP verification in at most 1.5 ms.
pub fn bench_dcap(iterations: u32) -> anyhow::Result<serde_json::Value> {
    const GOAL_US: f64 = 1500.0;
    let iterations = iterations.max(1);
    let verifier = DcapVerifier::new();
    let mut per_sample = serde_json::Map::new();
    let mut total_us = 0.0;
    let mut timed = 0u32;
    for info in samples::ALL {
        let sample = samples::load(info).context("loading dcap-qvl's sample quotes")?;
        let collateral = Collateral::from_json(&sample.collateral_json)?;
        let outcome = verifier.verify(&sample.quote, &collateral, info.now);
        let us = time_us(iterations, || {
            verifier.verify(&sample.quote, &collateral, info.now).is_ok() == outcome.is_ok()
        })?;
        let parse_us = time_us(iterations, || {
            Collateral::from_json(&sample.collateral_json).is_ok()
        })?;
        let verdict = match &outcome {
            Ok(claims) => claims.tcb_status.to_string(),
            Err(e) => format!("rejected: {}", e.reason()),
        };
        // Time only the samples that verify fully; a rejected one stops before the end of the pipeline.
        if outcome.is_ok() {
            total_us += us;
            timed += 1;
        }
        per_sample.insert(
            info.name.to_string(),
            json!({
                "verdict": verdict,
                "us_per_verification": round(us),
                "verifications_per_sec": round(1e6 / us),
                "collateral_json_parse_us": round(parse_us),
            }),
        );
    }
    if timed == 0 {
        bail!("no sample verified");
    }
    let mean_us = total_us / f64::from(timed);

    let key = veil_crypto::sign::SigningKey::from_bytes(&[7; 32]);
    let sim = SimEvidence::sign(&key, [1; 32], [2; 64], 1_700_000_000).to_bytes();
    let sim_us = time_us(iterations, || SimVerifier.verify(&sim, 1_700_000_000).is_ok())?;

    Ok(json!({
        "dcap_verify": {
            "iterations_per_sample": iterations,
            "samples": per_sample,
            "mean_us_per_verification": round(mean_us),
            "verifications_per_sec": round(1e6 / mean_us),
            "goal_us": GOAL_US,
            "goal_ratio": round(mean_us / GOAL_US),
            "meets_goal": mean_us <= GOAL_US,
            "baseline_sim_verify_us": round(sim_us),
            "ratio_vs_sim_verify": round(mean_us / sim_us),
            "build": if cfg!(debug_assertions) { "debug (dependencies optimised)" } else { "release" },
        }
    }))
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn bench_dcap_times_every_sample() {
        let iterations = std::env::var("VEIL_BENCH_ITERATIONS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3);
        let report = super::bench_dcap(iterations).unwrap();
        eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
        let d = &report["dcap_verify"];
        for name in ["sgx_quote", "tdx_quote", "tdx_quote_td15ex", "tdx_quote_outdated"] {
            assert!(
                d["samples"][name]["us_per_verification"].as_f64().unwrap() > 0.0,
                "{name}"
            );
        }
        assert_eq!(d["samples"]["tdx_quote"]["verdict"], "UpToDate");
        assert_eq!(
            d["samples"]["sgx_quote"]["verdict"],
            "ConfigurationAndSWHardeningNeeded"
        );
        assert!(
            d["samples"]["tdx_quote_outdated"]["verdict"]
                .as_str()
                .unwrap()
                .starts_with("rejected: ")
        );
        assert!(d["verifications_per_sec"].as_f64().unwrap() > 0.0);
        assert!(d["ratio_vs_sim_verify"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn measurement_sets_parse() {
        let set = super::parse_measurement_set("MRTD=00ff, rtmr0=01").unwrap();
        assert_eq!(set["mrtd"].0, [0x00, 0xff]);
        assert_eq!(set["rtmr0"].0, [0x01]);
        assert!(super::parse_measurement_set("").is_err());
        assert!(super::parse_measurement_set("mrtd").is_err());
        assert!(super::parse_measurement_set("mrtd=zz").is_err());
    }
}
