//! The local directory backend: `<dir>/sha256/<first 2 hex digits>/<64 hex digits>`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::{BlobAddress, BlobError, BlobReader, BlobStore, Hasher, Result};

/// Temporary files older than this are left-overs of a crashed put and are removed when a store opens.
const STALE_TMP: Duration = Duration::from_secs(24 * 3600);
const COPY_BUF: usize = 1 << 20;

/// Blobs in a local directory.
///
/// A put streams into a temporary file in `<dir>/tmp` (same file system), hashing as it writes, fsyncs
/// it, renames it to its address's path and fsyncs the directory: a blob is either wholly present or
/// absent, never half-written, and a put that returned survives a crash. Concurrent puts of the same bytes
/// are safe (the rename is atomic and both write the same content).
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    /// Opens (creating if needed) a store in `dir`, and removes day-old left-overs of crashed puts.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        for sub in ["sha256", "tmp"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(BlobError::io(format!(
                "cannot create the blob store directory {}",
                p.display()
            )))?;
        }
        let store = Self { dir };
        store.remove_stale_tmp();
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds (or would hold) a blob.
    pub fn path_of(&self, address: &BlobAddress) -> PathBuf {
        let hex = address.hex();
        self.dir.join("sha256").join(&hex[..2]).join(hex)
    }

    fn remove_stale_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.dir.join("tmp")) else {
            return;
        };
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE_TMP);
            if old {
                tracing::info!(path = %entry.path().display(), "removing a left-over temporary blob");
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn put_inner(&self, data: &mut dyn Read, expected: Option<&BlobAddress>) -> Result<BlobAddress> {
        let tmp_dir = self.dir.join("tmp");
        let mut tmp = tempfile::Builder::new()
            .prefix("put-")
            .tempfile_in(&tmp_dir)
            .map_err(BlobError::io(format!(
                "cannot create a temporary file in {}",
                tmp_dir.display()
            )))?;
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(crate::reader::into_blob_error(
                        e,
                        "cannot read the blob's data".into(),
                    ));
                }
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(BlobError::io(format!("cannot write {}", tmp.path().display())))?;
        }
        let len = hasher.len();
        let address = hasher.finish();
        if let Some(expected) = expected
            && *expected != address
        {
            return Err(BlobError::HashMismatch {
                expected: *expected,
                actual: address,
            });
        }
        let dest = self.path_of(&address);
        if fs::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == len) {
            tracing::debug!(%address, "blob already stored");
            return Ok(address); // the temporary file is removed on drop
        }
        tmp.as_file()
            .sync_all()
            .map_err(BlobError::io(format!("cannot fsync {}", tmp.path().display())))?;
        let shard = dest.parent().unwrap_or(&self.dir).to_path_buf();
        let new_shard = !shard.is_dir();
        fs::create_dir_all(&shard).map_err(BlobError::io(format!("cannot create {}", shard.display())))?;
        tmp.persist(&dest).map_err(|e| BlobError::Io {
            context: format!("cannot move the new blob to {}", dest.display()),
            source: e.error,
        })?;
        sync_dir(&shard)?;
        if new_shard {
            sync_dir(&self.dir.join("sha256"))?;
        }
        tracing::info!(%address, len, "blob stored");
        Ok(address)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(BlobError::io(format!(
            "cannot fsync the directory {}",
            dir.display()
        )))
}

impl BlobStore for LocalStore {
    fn put(&self, data: &mut dyn Read) -> Result<BlobAddress> {
        self.put_inner(data, None)
    }

    fn put_expected(&self, expected: &BlobAddress, data: &mut dyn Read) -> Result<()> {
        self.put_inner(data, Some(expected)).map(|_| ())
    }

    fn put_file(&self, path: &Path) -> Result<BlobAddress> {
        // One pass: the temporary file's rename makes hashing first unnecessary here.
        let mut f = File::open(path).map_err(BlobError::io(format!("cannot open {}", path.display())))?;
        self.put_inner(&mut f, None)
    }

    fn get(&self, address: &BlobAddress) -> Result<BlobReader> {
        let path = self.path_of(address);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound {
                    address: *address,
                    store: self.describe(),
                });
            }
            Err(e) => return Err(BlobError::io(format!("cannot open {}", path.display()))(e)),
        };
        let len = file
            .metadata()
            .map_err(BlobError::io(format!("cannot stat {}", path.display())))?
            .len();
        Ok(BlobReader::new(*address, len, Box::new(file)))
    }

    fn exists(&self, address: &BlobAddress) -> Result<bool> {
        Ok(self.path_of(address).is_file())
    }

    fn size(&self, address: &BlobAddress) -> Result<u64> {
        let path = self.path_of(address);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::NotFound {
                address: *address,
                store: self.describe(),
            }),
            Err(e) => Err(BlobError::io(format!("cannot stat {}", path.display()))(e)),
        }
    }

    fn list(&self) -> Result<Vec<BlobAddress>> {
        let root = self.dir.join("sha256");
        let mut out = Vec::new();
        let shards = fs::read_dir(&root).map_err(BlobError::io(format!("cannot list {}", root.display())))?;
        for shard in shards {
            let shard = shard.map_err(BlobError::io(format!("cannot list {}", root.display())))?;
            if !shard.path().is_dir() {
                continue;
            }
            let files = fs::read_dir(shard.path())
                .map_err(BlobError::io(format!("cannot list {}", shard.path().display())))?;
            for file in files.flatten() {
                let name = file.file_name();
                let Some(name) = name.to_str() else { continue };
                match BlobAddress::parse(&format!("{}{name}", crate::PREFIX)) {
                    Ok(a) if a.hex() == name && name.starts_with(&*shard.file_name().to_string_lossy()) => {
                        out.push(a)
                    }
                    _ => tracing::debug!(path = %file.path().display(), "not a blob; ignored"),
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, address: &BlobAddress) -> Result<bool> {
        let path = self.path_of(address);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(BlobError::io(format!("cannot delete {}", path.display()))(e)),
        }
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 253) as u8).collect()
    }

    #[test]
    fn put_get_list_size_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let data = sample(3 * COPY_BUF + 17);
        let a = store.put_bytes(&data).unwrap();
        assert_eq!(a, BlobAddress::of(&data));
        let path = store.path_of(&a);
        assert!(path.ends_with(format!("sha256/{}/{}", &a.hex()[..2], a.hex())));
        assert_eq!(fs::read(&path).unwrap(), data);
        assert!(store.exists(&a).unwrap());
        assert_eq!(store.size(&a).unwrap(), data.len() as u64);
        assert_eq!(store.get_bytes(&a).unwrap(), data);
        // Idempotent.
        assert_eq!(store.put_bytes(&data).unwrap(), a);
        let b = store.put_bytes(b"").unwrap();
        let mut both = vec![a, b];
        both.sort();
        assert_eq!(store.list().unwrap(), both);
        // Nothing is left in tmp/.
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert!(store.delete(&a).unwrap());
        assert!(!store.delete(&a).unwrap());
        assert!(!store.exists(&a).unwrap());
        assert!(matches!(store.size(&a), Err(BlobError::NotFound { .. })));
        let err = store.get(&a).unwrap_err().to_string();
        assert!(
            err.contains(&a.to_string()) && err.contains("not in the store"),
            "{err}"
        );
        assert_eq!(store.list().unwrap(), vec![b]);
    }

    #[test]
    fn put_file_and_put_expected() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("store")).unwrap();
        let f = dir.path().join("f");
        fs::write(&f, sample(1000)).unwrap();
        let a = store.put_file(&f).unwrap();
        assert_eq!(a, BlobAddress::of(&sample(1000)));
        let wrong = BlobAddress::of(b"something else");
        let err = store.put_expected(&wrong, &mut &sample(10)[..]).unwrap_err();
        assert!(matches!(err, BlobError::HashMismatch { .. }), "{err}");
        assert!(!store.exists(&wrong).unwrap());
        assert!(!store.exists(&BlobAddress::of(&sample(10))).unwrap());
        store
            .put_expected(&BlobAddress::of(&sample(10)), &mut &sample(10)[..])
            .unwrap();
        // The trait's default put_file (hash first, then put_expected) gives the same address.
        struct Via<'a>(&'a LocalStore);
        impl std::fmt::Debug for Via<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("Via")
            }
        }
        impl BlobStore for Via<'_> {
            fn put(&self, d: &mut dyn Read) -> Result<BlobAddress> {
                self.0.put(d)
            }
            fn put_expected(&self, e: &BlobAddress, d: &mut dyn Read) -> Result<()> {
                self.0.put_expected(e, d)
            }
            fn get(&self, a: &BlobAddress) -> Result<BlobReader> {
                self.0.get(a)
            }
            fn exists(&self, a: &BlobAddress) -> Result<bool> {
                self.0.exists(a)
            }
            fn size(&self, a: &BlobAddress) -> Result<u64> {
                self.0.size(a)
            }
            fn list(&self) -> Result<Vec<BlobAddress>> {
                self.0.list()
            }
            fn delete(&self, a: &BlobAddress) -> Result<bool> {
                self.0.delete(a)
            }
            fn describe(&self) -> String {
                self.0.describe()
            }
        }
        assert!(Via(&store).delete(&a).unwrap());
        assert_eq!(Via(&store).put_file(&f).unwrap(), a);
        assert!(store.exists(&a).unwrap());
    }

    #[test]
    fn corrupted_blobs_are_named_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let data = sample(5000);
        let a = store.put_bytes(&data).unwrap();
        let path = store.path_of(&a);

        let mut flipped = data.clone();
        flipped[4000] ^= 1;
        fs::write(&path, &flipped).unwrap();
        let err = store.get_bytes(&a).unwrap_err();
        assert!(matches!(err, BlobError::Corrupted { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&a.to_string()) && msg.contains("corrupted"), "{msg}");
        // Through plain Read, the error is InvalidData and still names the blob.
        let mut r = store.get(&a).unwrap();
        let e = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains(&a.to_string()));

        fs::write(&path, &data[..100]).unwrap();
        assert!(
            store
                .get_bytes(&a)
                .unwrap_err()
                .to_string()
                .contains(&a.to_string())
        );

        // Putting the right bytes again repairs a truncated blob.
        store.put_bytes(&data).unwrap();
        assert_eq!(store.get_bytes(&a).unwrap(), data);
    }

    #[test]
    fn a_failing_put_leaves_nothing() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                self.0 -= 1;
                buf[0] = 1;
                Ok(1)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let err = store.put(&mut Failing(10)).unwrap_err().to_string();
        assert!(err.contains("disk on fire"), "{err}");
        assert!(store.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn stray_files_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let a = store.put_bytes(b"x").unwrap();
        fs::create_dir_all(dir.path().join("sha256/zz")).unwrap();
        fs::write(dir.path().join("sha256/zz/notes.txt"), b"hi").unwrap();
        fs::write(dir.path().join("sha256/README"), b"hi").unwrap();
        // A valid name in the wrong shard is not a blob either.
        let b = BlobAddress::of(b"y");
        let wrong_shard = if a.hex()[..2] == b.hex()[..2] {
            "00"
        } else {
            &a.hex()[..2]
        };
        fs::write(dir.path().join("sha256").join(wrong_shard).join(b.hex()), b"y").unwrap();
        assert_eq!(store.list().unwrap(), vec![a]);
    }
}
