//! The TDX backend against a fake configfs-tsm tree, with a thread playing the kernel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use veil_platform::tdx::{TSM_REPORT_DIR, TdxConfig, TdxPlatform};
use veil_platform::{Platform, PlatformError, PlatformKind, RawEvidence};

/// Makes a quote from the report data.
type MakeQuote = fn(&[u8]) -> Vec<u8>;

/// How the fake kernel behaves.
#[derive(Clone)]
struct Behaviour {
    provider: &'static str,
    /// How much `generation` advances per inblob write.
    generation_step: u64,
    /// `None`: never produce a quote.
    quote: Option<MakeQuote>,
}

fn fake_quote(report_data: &[u8]) -> Vec<u8> {
    let mut q = b"FAKE-TDX-QUOTE:".to_vec();
    q.extend_from_slice(report_data);
    q
}

struct FakeKernel {
    root: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeSet<PathBuf>>>,
    thread: Option<JoinHandle<()>>,
}

/// Writes a file atomically (rename), as a real attribute never shows half a value.
fn put(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl FakeKernel {
    fn start(b: Behaviour) -> Self {
        let root = tempfile::tempdir().unwrap();
        let reports = root.path().join(TSM_REPORT_DIR);
        std::fs::create_dir_all(&reports).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let (stop2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut answered = BTreeSet::new();
            while !stop2.load(Ordering::Relaxed) {
                for entry in std::fs::read_dir(&reports).unwrap().flatten() {
                    let dir = entry.path();
                    if seen2.lock().unwrap().insert(dir.clone()) {
                        // A new entry: the kernel creates its attributes.
                        put(&dir.join("generation"), b"0\n");
                        put(&dir.join("provider"), format!("{}\n", b.provider).as_bytes());
                    }
                    let inblob = std::fs::read(dir.join("inblob")).unwrap_or_default();
                    if inblob.len() == 64 && !answered.contains(&dir) {
                        answered.insert(dir.clone());
                        put(
                            &dir.join("generation"),
                            format!("{}\n", b.generation_step).as_bytes(),
                        );
                        if let Some(quote) = b.quote {
                            put(&dir.join("outblob"), &quote(&inblob));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Self {
            root,
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn config(&self) -> TdxConfig {
        TdxConfig {
            root: self.root.path().to_path_buf(),
            timeout: Duration::from_secs(10),
        }
    }

    fn entries_left(&self) -> usize {
        std::fs::read_dir(self.root.path().join(TSM_REPORT_DIR))
            .unwrap()
            .count()
    }
}

impl Drop for FakeKernel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const TDX: Behaviour = Behaviour {
    provider: "tdx_guest",
    generation_step: 1,
    quote: Some(fake_quote),
};

#[test]
fn quote_round_trip_through_configfs() {
    let kernel = FakeKernel::start(TDX);
    let tdx = TdxPlatform::start(kernel.config()).unwrap();
    assert_eq!(tdx.kind(), PlatformKind::Tdx);
    for i in 0..3u8 {
        let rd = [i; 64];
        assert_eq!(tdx.evidence(&rd).unwrap(), RawEvidence::TdxQuote(fake_quote(&rd)));
    }
    assert_eq!(kernel.seen.lock().unwrap().len(), 3, "a fresh entry per quote");
    assert_eq!(kernel.entries_left(), 0, "entries are removed afterwards");
}

#[test]
fn another_provider_is_refused() {
    let kernel = FakeKernel::start(Behaviour {
        provider: "sev_guest",
        ..TDX
    });
    let tdx = TdxPlatform::start(kernel.config()).unwrap();
    match tdx.quote(&[1; 64]) {
        Err(PlatformError::WrongProvider { found }) => assert_eq!(found, "sev_guest"),
        other => panic!("{other:?}"),
    }
    assert_eq!(kernel.entries_left(), 0);
}

#[test]
fn a_concurrent_writer_is_detected_by_generation() {
    let kernel = FakeKernel::start(Behaviour {
        generation_step: 2,
        ..TDX
    });
    let tdx = TdxPlatform::start(kernel.config()).unwrap();
    match tdx.quote(&[1; 64]) {
        Err(PlatformError::GenerationMismatch {
            before: 0,
            after: 2,
            expected: 1,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(kernel.entries_left(), 0);
}

#[test]
fn a_silent_kernel_times_out() {
    let kernel = FakeKernel::start(Behaviour { quote: None, ..TDX });
    let config = TdxConfig {
        timeout: Duration::from_millis(200),
        ..kernel.config()
    };
    let tdx = TdxPlatform::start(config).unwrap();
    assert!(matches!(tdx.quote(&[1; 64]), Err(PlatformError::Timeout { .. })));
    assert_eq!(kernel.entries_left(), 0);
}

#[test]
fn no_configfs_means_no_tdx() {
    let root = tempfile::tempdir().unwrap();
    let config = TdxConfig {
        root: root.path().to_path_buf(),
        ..TdxConfig::default()
    };
    assert!(matches!(TdxPlatform::start(config), Err(PlatformError::NoTee(_))));
}

#[test]
fn sealing_is_not_supported_yet() {
    let kernel = FakeKernel::start(TDX);
    let tdx = TdxPlatform::start(kernel.config()).unwrap();
    let err = tdx.seal(b"secret").unwrap_err();
    assert!(matches!(err, PlatformError::Unsupported(_)));
    assert_eq!(err.to_string(), "sealing on Intel TDX is not supported yet");
    assert!(matches!(tdx.unseal(b"x"), Err(PlatformError::Unsupported(_))));
}

#[test]
fn measurement_is_read_from_a_quote() {
    fn sample_quote(_rd: &[u8]) -> Vec<u8> {
        veil_attest::samples::load(veil_attest::samples::TDX)
            .unwrap()
            .quote
    }
    let kernel = FakeKernel::start(Behaviour {
        quote: Some(sample_quote),
        ..TDX
    });
    let tdx = TdxPlatform::start(kernel.config()).unwrap();
    let m = tdx.measurement().unwrap();
    assert_eq!(
        hex::encode(&m["mrtd"].0),
        "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
    );
    // The fake quote is not a DCAP quote: measurement says so rather than guessing.
    let kernel = FakeKernel::start(TDX);
    let tdx = TdxPlatform::start(kernel.config()).unwrap();
    assert!(matches!(tdx.measurement(), Err(PlatformError::BadEvidence(_))));
}
