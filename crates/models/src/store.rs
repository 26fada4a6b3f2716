//! Where models live on disk, how a name resolves to a file, and importing a local GGUF.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::catalog::{CATALOG, CatalogEntry, lookup};
use crate::error::{Error, Result};
use crate::fetch::Progress;

/// Environment variable that overrides the default data directory.
pub const DATA_DIR_ENV: &str = "VEIL_DATA_DIR";

/// Veil's data directory: `$VEIL_DATA_DIR` if set, else the user's data directory + `veil`
/// (`~/.local/share/veil` on Linux).
pub fn default_data_dir() -> Result<PathBuf> {
    match std::env::var_os(DATA_DIR_ENV) {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => dirs::data_dir().map(|d| d.join("veil")).ok_or(Error::NoDataDir),
    }
}

/// A model file present in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModel {
    /// The name to use with `--model`.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// The catalogue entry, for fetched (not imported) models.
    pub catalog: Option<&'static CatalogEntry>,
}

/// The models directory inside a Veil data directory.
#[derive(Debug, Clone)]
pub struct ModelStore {
    data_dir: PathBuf,
}

impl ModelStore {
    /// A store under `data_dir` (created on first write).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
        }
    }

    /// A store under `data_dir` if given, else under [`default_data_dir`].
    pub fn open(data_dir: Option<&Path>) -> Result<Self> {
        match data_dir {
            Some(dir) => Ok(Self::new(dir)),
            None => Ok(Self::new(default_data_dir()?)),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `<data dir>/models`.
    pub fn models_dir(&self) -> PathBuf {
        self.data_dir.join("models")
    }

    /// Where a model named `name` is (or would be) installed.
    pub fn path_for(&self, name: &str) -> PathBuf {
        self.models_dir().join(format!("{name}.gguf"))
    }

    pub(crate) fn ensure_models_dir(&self) -> Result<PathBuf> {
        let dir = self.models_dir();
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
        Ok(dir)
    }

    /// The installed file of a catalogue model, if it is there with the expected size. Files are
    /// only ever renamed into place after their SHA-256 was checked, so this check is enough to
    /// make a second fetch instant.
    pub fn installed(&self, entry: &CatalogEntry) -> Option<PathBuf> {
        let path = self.path_for(entry.name);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() == entry.size => Some(path),
            _ => None,
        }
    }

    /// Resolves what a user typed after `--model`: an existing file path, a fetched catalogue
    /// model, or an imported model's name.
    pub fn resolve(&self, name_or_path: &str) -> Result<PathBuf> {
        let as_path = Path::new(name_or_path);
        if as_path.is_file() {
            return Ok(as_path.to_path_buf());
        }
        if let Some(entry) = lookup(name_or_path) {
            return self.installed(entry).ok_or_else(|| Error::NotFetched {
                name: entry.name.to_owned(),
            });
        }
        let imported = self.path_for(name_or_path);
        if !name_or_path.contains('/') && imported.is_file() {
            return Ok(imported);
        }
        Err(Error::UnknownModel {
            name: name_or_path.to_owned(),
            known: self.known_names(),
        })
    }

    fn known_names(&self) -> String {
        let mut names: Vec<String> = CATALOG.iter().map(|e| e.name.to_owned()).collect();
        if let Ok(local) = self.list() {
            for m in local {
                if !names.contains(&m.name) {
                    names.push(m.name);
                }
            }
        }
        names.join(", ")
    }

    /// Every `.gguf` in the models directory, sorted by name.
    pub fn list(&self) -> Result<Vec<LocalModel>> {
        let dir = self.models_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("cannot read {}", dir.display()))(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Error::io(format!("cannot read {}", dir.display())))?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            // Hidden files are temporaries and lock files.
            if name.starts_with('.') || !name.ends_with(".gguf") {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let name = name.trim_end_matches(".gguf").to_owned();
            let catalog = lookup(&name).filter(|e| e.name == name);
            out.push(LocalModel {
                name,
                path,
                size: meta.len(),
                catalog,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Copies a local GGUF file into the store (atomically), after checking that it is a GGUF.
    /// It is then usable by its file stem: `veil chat --model STEM`. Importing the same file
    /// again replaces the copy.
    pub fn import(&self, source: &Path, progress: &mut dyn FnMut(Progress)) -> Result<PathBuf> {
        let mut input = File::open(source).map_err(Error::io(format!("cannot open {}", source.display())))?;
        check_gguf_header(&mut input, source)?;
        let name = source
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty() && !s.starts_with('.'))
            .ok_or_else(|| Error::NotGguf {
                path: source.to_path_buf(),
                reason: "its file name cannot be used as a model name".into(),
            })?;
        if lookup(name).is_some() {
            return Err(Error::NotGguf {
                path: source.to_path_buf(),
                reason: format!("{name:?} is the name of a catalogue model; rename the file"),
            });
        }
        let total = input.metadata().map(|m| m.len()).unwrap_or(0);
        let dir = self.ensure_models_dir()?;
        let dest = self.path_for(name);
        progress(Progress::Importing {
            source: source.to_path_buf(),
            total,
        });

        // Copy from the start (the header check read the first bytes).
        let mut input = File::open(source).map_err(Error::io(format!("cannot open {}", source.display())))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".import-")
            .tempfile_in(&dir)
            .map_err(Error::io(format!(
                "cannot create a temporary file in {}",
                dir.display()
            )))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            let n = input
                .read(&mut buf)
                .map_err(Error::io(format!("cannot read {}", source.display())))?;
            if n == 0 {
                break;
            }
            tmp.write_all(&buf[..n])
                .map_err(Error::io("cannot write the imported copy"))?;
            done += n as u64;
            progress(Progress::Copying { done, total });
        }
        tmp.as_file()
            .sync_all()
            .map_err(Error::io("cannot sync the imported copy"))?;
        tmp.persist(&dest)
            .map_err(|e| Error::io(format!("cannot move the copy to {}", dest.display()))(e.error))?;
        progress(Progress::Installed { path: dest.clone() });
        Ok(dest)
    }
}

/// Checks that `file` starts like a GGUF model: the magic `GGUF` and a version Veil's engine reads
/// (2 or 3). The engine checks the whole header again when it loads the file.
pub fn check_gguf_header(file: &mut impl Read, path: &Path) -> Result<()> {
    let not_gguf = |reason: String| Error::NotGguf {
        path: path.to_path_buf(),
        reason,
    };
    let mut header = [0u8; 8];
    let mut got = 0;
    while got < header.len() {
        match file.read(&mut header[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()))(e)),
        }
    }
    if got < 4 || &header[..4] != b"GGUF" {
        return Err(not_gguf(format!(
            "it does not start with the GGUF magic bytes (found {:?}); give a .gguf model file",
            String::from_utf8_lossy(&header[..got.min(4)])
        )));
    }
    if got < 8 {
        return Err(not_gguf("the file is truncated inside its header".into()));
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(2..=3).contains(&version) {
        return Err(not_gguf(format!(
            "GGUF version {version} is not supported (supported: 2, 3)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gguf_bytes() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b
    }

    #[test]
    fn header_check_accepts_gguf_and_rejects_others() {
        let p = Path::new("x.gguf");
        assert!(check_gguf_header(&mut &gguf_bytes()[..], p).is_ok());
        let err = check_gguf_header(&mut &b"PK\x03\x04rest"[..], p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("GGUF magic"), "{err}");
        let err = check_gguf_header(&mut &b"GGUF\x01"[..], p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
        let mut v9 = gguf_bytes();
        v9[4] = 9;
        let err = check_gguf_header(&mut &v9[..], p).unwrap_err().to_string();
        assert!(err.contains("version 9"), "{err}");
        assert!(check_gguf_header(&mut &b""[..], p).is_err());
    }

    #[test]
    fn import_copies_a_gguf_and_resolves_it_by_name() {
        let data = tempfile::tempdir().unwrap();
        let src_dir = tempfile::tempdir().unwrap();
        let src = src_dir.path().join("mine.gguf");
        std::fs::write(&src, gguf_bytes()).unwrap();
        let store = ModelStore::new(data.path());
        let mut events = Vec::new();
        let dest = store.import(&src, &mut |p| events.push(p)).unwrap();
        assert_eq!(dest, store.path_for("mine"));
        assert_eq!(std::fs::read(&dest).unwrap(), gguf_bytes());
        assert!(matches!(events.last(), Some(Progress::Installed { .. })));
        assert_eq!(store.resolve("mine").unwrap(), dest);
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "mine");
        assert!(listed[0].catalog.is_none());
        // No temporaries are left behind.
        assert_eq!(std::fs::read_dir(store.models_dir()).unwrap().count(), 1);
    }

    #[test]
    fn import_rejects_non_gguf_and_missing_files() {
        let data = tempfile::tempdir().unwrap();
        let store = ModelStore::new(data.path());
        let src = data.path().join("notes.gguf");
        std::fs::write(&src, b"hello, not a model").unwrap();
        let err = store.import(&src, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::NotGguf { .. }), "{err}");
        let err = store
            .import(&data.path().join("absent.gguf"), &mut |_| {})
            .unwrap_err();
        assert!(err.to_string().contains("cannot open"), "{err}");
        assert!(!store.path_for("notes").exists());
    }

    #[test]
    fn resolve_explains_unknown_and_unfetched_models() {
        let data = tempfile::tempdir().unwrap();
        let store = ModelStore::new(data.path());
        let err = store.resolve("smollm2").unwrap_err().to_string();
        assert!(err.contains("veil model fetch smollm2"), "{err}");
        let err = store.resolve("gpt-17").unwrap_err().to_string();
        assert!(err.contains("unknown model") && err.contains("smollm2"), "{err}");
    }

    #[test]
    fn installed_requires_the_catalogued_size() {
        let data = tempfile::tempdir().unwrap();
        let store = ModelStore::new(data.path());
        let entry = lookup("smollm2").unwrap();
        store.ensure_models_dir().unwrap();
        std::fs::write(store.path_for("smollm2"), b"GGUF short").unwrap();
        assert_eq!(store.installed(entry), None);
    }
}
