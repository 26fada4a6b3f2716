//! `veil model seal`, run as the real binary on a small fake GGUF.
// Test code: a failed unwrap is a failed test (clippy's test exemption misses helper functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn veil() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veil"));
    cmd.env_remove("VEIL_LOG");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run veil")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `sha256:<hex>` of a file, computed by coreutils' `sha256sum`, independently of Veil.
fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    assert!(out.status.success());
    format!("sha256:{}", text(&out.stdout).split_whitespace().next().unwrap())
}

/// `GGUF` and 2.5 MiB of bytes: three 1 MiB chunks.
fn fake_gguf(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("model.gguf");
    let mut bytes = b"GGUF\x03\x00\x00\x00".to_vec();
    bytes.extend((0..(5 << 19)).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn seal_prints_the_bundle_address_and_writes_a_private_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = fake_gguf(dir.path());
    let bundle = dir.path().join("model.bundle");
    let blobs = dir.path().join("blobs");
    let out = run(veil()
        .args(["model", "seal"])
        .arg(&model)
        .arg("--out")
        .arg(&bundle)
        .arg("--blobs")
        .arg(&blobs));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let address = text(&out.stdout).trim().to_owned();
    assert_eq!(
        address,
        sha256_of(&bundle),
        "stdout is the bundle's content address"
    );
    assert!(text(&out.stderr).contains("sealed"), "{}", text(&out.stderr));

    let sealed = std::fs::read(&bundle).unwrap();
    // Ciphertext only: the bundle is an ordinary readable file, unlike the key.
    assert_eq!(
        std::fs::metadata(&bundle).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(&sealed[..8], b"VEILBNDL");
    let plain = std::fs::read(&model).unwrap();
    assert!(sealed.len() > plain.len());
    // No 64-byte window of the model appears in the bundle.
    let needle = &plain[1000..1064];
    assert!(!sealed.windows(64).any(|w| w == needle));

    let key_file = dir.path().join("model.bundle.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key file mode {mode:o}");
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(key.trim().len(), 64);
    assert!(key.trim().chars().all(|c| c.is_ascii_hexdigit()));

    let hex = address.strip_prefix("sha256:").unwrap();
    let stored = blobs.join("sha256").join(&hex[..2]).join(hex);
    assert_eq!(std::fs::read(stored).unwrap(), sealed);

    // Sealing again gives a new key and a new bundle (fresh key, fresh salt).
    let bundle2 = dir.path().join("again.bundle");
    let key2 = dir.path().join("my.key");
    let out = run(veil()
        .args(["model", "seal"])
        .arg(&model)
        .arg("--out")
        .arg(&bundle2)
        .arg("--key-out")
        .arg(&key2));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(text(&out.stdout).trim(), address);
    assert_eq!(
        std::fs::metadata(&key2).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_ne!(std::fs::read(&key2).unwrap(), key.as_bytes());
    assert!(!dir.path().join("again.bundle.key").exists());
}

#[test]
fn key_to_seals_the_key_to_a_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let model = fake_gguf(dir.path());
    let bundle = dir.path().join("m.bundle");
    // The X25519 base point (u = 9) is a valid public key.
    let recipient = format!("09{}", "00".repeat(31));
    let out = run(veil()
        .args(["model", "seal"])
        .arg(&model)
        .arg("--out")
        .arg(&bundle)
        .args(["--key-to", &recipient]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), sha256_of(&bundle));
    let sealed_key = std::fs::read(dir.path().join("m.bundle.key.sealed")).unwrap();
    assert_eq!(sealed_key[0], 1, "sealed-message version");
    assert!(sealed_key.windows(17).any(|w| w == b"veil/v1/model-key"));
    assert!(
        !dir.path().join("m.bundle.key").exists(),
        "no raw key on disk with --key-to"
    );
}

#[test]
fn bad_inputs_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let not_gguf = dir.path().join("notes.txt");
    std::fs::write(&not_gguf, b"hello, this is not a model").unwrap();
    let bundle = dir.path().join("x.bundle");
    let out = run(veil()
        .args(["model", "seal"])
        .arg(&not_gguf)
        .arg("--out")
        .arg(&bundle));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is not a GGUF model"),
        "{}",
        text(&out.stderr)
    );
    assert!(!bundle.exists());

    let model = fake_gguf(dir.path());
    let out = run(veil()
        .args(["model", "seal"])
        .arg(&model)
        .arg("--out")
        .arg(&bundle)
        .args(["--key-to", "abcd"]));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--key-to"), "{}", text(&out.stderr));

    let out = run(veil()
        .args(["model", "seal"])
        .arg(dir.path().join("missing.gguf"))
        .arg("--out")
        .arg(&bundle));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot open"), "{}", text(&out.stderr));
    // Nothing half-written is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}
