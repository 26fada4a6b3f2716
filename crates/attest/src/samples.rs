//! The real Intel quotes and collateral that the `dcap-qvl` crate ships in its `sample/` folder, used
//! as fixtures by tests and by `veil bench attest`.
//!
//! They are not copied into Veil: cargo has always unpacked `dcap-qvl` (a dependency) into its
//! registry, so they are found there (`$CARGO_HOME` or `~/.cargo`, `registry/src/*/dcap-qvl-0.7.1/sample`),
//! or in the folder named by `VEIL_DCAP_SAMPLES`.

use std::io;
use std::path::PathBuf;

/// The environment variable that overrides where the samples are looked for.
pub const SAMPLES_ENV: &str = "VEIL_DCAP_SAMPLES";
const CRATE_DIR: &str = "dcap-qvl-0.7.1";

/// A sample: its file name in `sample/`, and a "now" (unix seconds) inside its collateral's validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleInfo {
    /// The quote's file name (`<name>_collateral.json` is its collateral).
    pub name: &'static str,
    /// A time at which every piece of its collateral is valid.
    pub now: u64,
}

/// SGX quote v3; TCB `ConfigurationAndSWHardeningNeeded` (INTEL-SA-00289, INTEL-SA-00615).
pub const SGX: SampleInfo = SampleInfo {
    name: "sgx_quote",
    now: 1_750_377_600,
}; // 2025-06-20T00:00:00Z
/// TDX quote v4; TCB `UpToDate`.
pub const TDX: SampleInfo = SampleInfo {
    name: "tdx_quote",
    now: 1_750_377_600,
}; // 2025-06-20T00:00:00Z
/// TDX quote v5 with a TD 1.5ex report body; TCB `UpToDate`.
pub const TDX_TD15EX: SampleInfo = SampleInfo {
    name: "tdx_quote_td15ex",
    now: 1_791_504_000,
}; // 2026-10-09T00:00:00Z
/// TDX quote v4 on an out-of-date platform; TCB `OutOfDate`.
pub const TDX_OUTDATED: SampleInfo = SampleInfo {
    name: "tdx_quote_outdated",
    now: 1_771_459_200,
}; // 2026-02-19T00:00:00Z
/// All four.
pub const ALL: [SampleInfo; 4] = [SGX, TDX, TDX_TD15EX, TDX_OUTDATED];

/// A loaded sample.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Which sample.
    pub info: SampleInfo,
    /// The raw quote.
    pub quote: Vec<u8>,
    /// The collateral JSON.
    pub collateral_json: Vec<u8>,
}

/// The folder holding the samples.
pub fn dir() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(SAMPLES_ENV) {
        let dir = PathBuf::from(dir);
        if dir.join(TDX.name).is_file() {
            return Ok(dir);
        }
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{SAMPLES_ENV}={} does not hold dcap-qvl's sample quotes",
                dir.display()
            ),
        ));
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let mut tried = Vec::new();
    if let Some(cargo_home) = cargo_home {
        let registry = cargo_home.join("registry").join("src");
        tried.push(registry.display().to_string());
        if let Ok(entries) = std::fs::read_dir(&registry) {
            let mut candidates: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path().join(CRATE_DIR).join("sample"))
                .collect();
            candidates.sort();
            if let Some(found) = candidates.into_iter().find(|dir| dir.join(TDX.name).is_file()) {
                return Ok(found);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "dcap-qvl's sample quotes not found (looked in {}/*/{CRATE_DIR}/sample); run `cargo fetch`, \
             or set {SAMPLES_ENV} to a folder holding them",
            if tried.is_empty() {
                "<no CARGO_HOME or HOME>".to_string()
            } else {
                tried.join(", ")
            }
        ),
    ))
}

/// Loads one sample's quote and collateral.
pub fn load(info: SampleInfo) -> io::Result<Sample> {
    let dir = dir()?;
    let read = |file: String| {
        let path = dir.join(&file);
        std::fs::read(&path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    };
    Ok(Sample {
        info,
        quote: read(info.name.to_string())?,
        collateral_json: read(format!("{}_collateral.json", info.name))?,
    })
}
