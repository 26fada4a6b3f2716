//! `veil model seal`: encrypt a model into a bundle with a fresh data key.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use veil_blobs::{BlobStore, LocalStore};
use veil_bundle::{DataKey, seal_key};
use veil_crypto::seal::HpkePublicKey;

#[derive(Debug, Args)]
pub struct SealArgs {
    /// The model to encrypt (a GGUF file).
    #[arg(value_name = "MODEL.gguf")]
    pub model: PathBuf,
    /// Where to write the encrypted bundle.
    #[arg(long, value_name = "BUNDLE")]
    pub out: PathBuf,
    /// Seal the data key to this recipient's HPKE public key (64 hex digits, e.g. a KMS or a worker's
    /// enclave key) and write it to BUNDLE.key.sealed; the raw key is never written.
    #[arg(long, value_name = "HPKE_PUBKEY_HEX", conflicts_with = "key_out")]
    pub key_to: Option<String>,
    /// Where to write the raw data key, readable only by you [default: BUNDLE.key].
    #[arg(long, value_name = "FILE")]
    pub key_out: Option<PathBuf>,
    /// Also put the bundle into this local blob store.
    #[arg(long, value_name = "DIR")]
    pub blobs: Option<PathBuf>,
}

/// `BUNDLE` + `suffix`, in the bundle's directory.
fn beside(bundle: &Path, suffix: &str) -> PathBuf {
    let mut name = bundle.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    bundle.with_file_name(name)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A temporary file (mode 0600) in `path`'s directory, renamed to `path` once complete.
fn temp_beside(path: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".veil-seal-")
        .tempfile_in(parent_dir(path))
        .with_context(|| format!("cannot create a file in {}", parent_dir(path).display()))
}

/// Makes a file that holds only ciphertext (a bundle, a sealed key) readable by all, like any new file.
fn make_public(tmp: &tempfile::NamedTempFile) -> anyhow::Result<()> {
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .context("cannot set a file's mode")
}

fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> anyhow::Result<()> {
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn seal(args: SealArgs) -> anyhow::Result<ExitCode> {
    let recipient = args
        .key_to
        .as_deref()
        .map(|h| {
            let bytes = hex::decode(h.trim()).context("--key-to is not hex")?;
            HpkePublicKey::from_slice(&bytes).context("--key-to is not an HPKE (X25519) public key")
        })
        .transpose()?;
    if args.out == args.model {
        bail!("--out must not be the model itself");
    }

    let file = File::open(&args.model).with_context(|| format!("cannot open {}", args.model.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot stat {}", args.model.display()))?
        .len();
    let mut model = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 4];
    let starts_gguf = model.read_exact(&mut magic).is_ok() && &magic == b"GGUF";
    if !starts_gguf {
        bail!(
            "{} is not a GGUF model (it does not start with \"GGUF\")",
            args.model.display()
        );
    }
    let model = (&magic[..]).chain(model);

    let key = DataKey::generate()?;
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("sealing {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    let tmp = temp_beside(&args.out)?;
    let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file());
    let sealed = veil_bundle::seal(model, len, &key, &mut out, &mut |done| bar.set_position(done))
        .with_context(|| format!("cannot seal {}", args.model.display()))?;
    out.flush()
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    drop(out);
    bar.finish_and_clear();
    let address = sealed.address;

    // The key first: a bundle without its key would be useless.
    let key_path = match &recipient {
        Some(pk) => {
            let path = beside(&args.out, ".key.sealed");
            let mut t = temp_beside(&path)?;
            t.write_all(&seal_key(pk, &address, &key)?)?;
            make_public(&t)?;
            persist(t, &path)?;
            path
        }
        None => {
            let path = args.key_out.clone().unwrap_or_else(|| beside(&args.out, ".key"));
            let mut t = temp_beside(&path)?; // created with mode 0600
            t.write_all(format!("{}\n", &*key.to_hex()).as_bytes())?;
            persist(t, &path)?;
            path
        }
    };
    make_public(&tmp)?;
    persist(tmp, &args.out)?;

    if let Some(dir) = &args.blobs {
        let store = LocalStore::open(dir)?;
        let stored = store.put_file(&args.out)?;
        if stored != address {
            bail!(
                "the blob store computed {stored} for {}, not {address}",
                args.out.display()
            );
        }
        eprintln!("stored in the blob store {}", dir.display());
    }
    eprintln!(
        "sealed {} ({} bytes, SHA-256 {}) into {} ({} bytes); data key {} {}",
        args.model.display(),
        len,
        hex::encode(sealed.plaintext_sha256),
        args.out.display(),
        sealed.bundle_len,
        if recipient.is_some() {
            "sealed to the recipient in"
        } else {
            "in"
        },
        key_path.display()
    );
    // The content address on stdout (scripts use it); everything else went to stderr.
    writeln!(std::io::stdout().lock(), "{address}")?;
    Ok(ExitCode::SUCCESS)
}
