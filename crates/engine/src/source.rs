//! Where a model's bytes come from: a file, or a file that exists only in memory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use memfd::{FileSeal, MemfdOptions};

use crate::error::{Error, Result};
use crate::gguf;

/// A model file that exists only in memory: an anonymous `memfd_create(2)` file, never on disk.
///
/// The confidential worker decrypts a model straight into one of these. llama.cpp opens it as
/// `/proc/self/fd/N` and maps it with mmap (shared page-cache pages: no second copy in memory). The
/// file is sealed once written (no write, grow or shrink), so the weights cannot change under the
/// engine. The descriptor stays open as long as this value lives; an engine loaded from it keeps it.
#[derive(Debug)]
pub struct InMemoryModel {
    memfd: memfd::Memfd,
    len: u64,
    name: String,
}

fn create_memfd(name: &str) -> Result<memfd::Memfd> {
    MemfdOptions::default()
        .allow_sealing(true)
        .close_on_exec(true)
        .create(format!("veil-model:{name}"))
        .map_err(|e| Error::Memory(format!("memfd_create failed: {e}")))
}

impl InMemoryModel {
    /// Copies a model from `reader` (e.g. a decrypting reader) into a new sealed memory file.
    pub fn from_reader(name: &str, reader: &mut impl Read) -> Result<Self> {
        let memfd = create_memfd(name)?;
        let mut file = memfd.as_file();
        let len = std::io::copy(reader, &mut file)
            .map_err(|e| Error::Memory(format!("cannot write the model into memory: {e}")))?;
        file.flush().map_err(|e| Error::Memory(e.to_string()))?;
        Self::seal(memfd, len, name)
    }

    /// Seals a filled memory file (no write, grow or shrink from now on).
    fn seal(memfd: memfd::Memfd, len: u64, name: &str) -> Result<Self> {
        memfd
            .add_seals(&[
                FileSeal::SealShrink,
                FileSeal::SealGrow,
                FileSeal::SealWrite,
                FileSeal::SealSeal,
            ])
            .map_err(|e| Error::Memory(format!("cannot seal the memory file: {e}")))?;
        memfd
            .as_file()
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::Memory(e.to_string()))?;
        Ok(Self {
            memfd,
            len,
            name: name.to_owned(),
        })
    }

    /// Copies model bytes into a new sealed memory file.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        Self::from_reader(name, &mut &bytes[..])
    }

    /// The path through which llama.cpp opens it: `/proc/self/fd/N`.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.memfd.as_file().as_raw_fd()))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn file(&self) -> &File {
        self.memfd.as_file()
    }
}

/// A memory file of a size fixed up front, filled by position: several threads may write their own
/// ranges at once (`pwrite(2)`, no shared cursor). [`InMemoryModelWriter::finish`] seals it into an
/// [`InMemoryModel`]. Bytes never written read as zeros: the caller must write every range before
/// finishing. Dropping it unfinished frees the memory.
#[derive(Debug)]
pub struct InMemoryModelWriter {
    memfd: memfd::Memfd,
    len: u64,
    name: String,
}

impl InMemoryModelWriter {
    /// A new memory file of `len` bytes. No memory is used until bytes are written.
    pub fn new(name: &str, len: u64) -> Result<Self> {
        let memfd = create_memfd(name)?;
        memfd
            .as_file()
            .set_len(len)
            .map_err(|e| Error::Memory(format!("cannot size the memory file to {len} bytes: {e}")))?;
        Ok(Self {
            memfd,
            len,
            name: name.to_owned(),
        })
    }

    /// Writes `bytes` at `offset`; the range must lie within the file.
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        if offset
            .checked_add(bytes.len() as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(Error::Memory(format!(
                "cannot write {} bytes at {offset} into a {}-byte memory file",
                bytes.len(),
                self.len
            )));
        }
        std::os::unix::fs::FileExt::write_all_at(self.memfd.as_file(), bytes, offset)
            .map_err(|e| Error::Memory(format!("cannot write the model into memory: {e}")))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Seals the file (no write, grow or shrink from now on) and returns the model.
    pub fn finish(self) -> Result<InMemoryModel> {
        InMemoryModel::seal(self.memfd, self.len, &self.name)
    }
}

/// What to load.
#[derive(Debug)]
pub enum ModelSource {
    /// A GGUF file on disk.
    Path(PathBuf),
    /// A GGUF that exists only in memory.
    Memory(InMemoryModel),
}

impl ModelSource {
    /// The path llama.cpp opens.
    pub(crate) fn llama_path(&self) -> PathBuf {
        match self {
            ModelSource::Path(p) => p.clone(),
            ModelSource::Memory(m) => m.proc_path(),
        }
    }

    /// How errors name this model.
    pub(crate) fn display_path(&self) -> PathBuf {
        match self {
            ModelSource::Path(p) => p.clone(),
            ModelSource::Memory(m) => PathBuf::from(format!("<in-memory model {}>", m.name)),
        }
    }

    /// Checks the GGUF header (before llama.cpp sees the file) and returns it.
    pub(crate) fn check(&self) -> Result<gguf::GgufHeader> {
        let shown = self.display_path();
        let header = match self {
            ModelSource::Path(path) => {
                let file = open_model_file(path)?;
                let len = file
                    .metadata()
                    .map_err(|e| Error::Io {
                        context: format!("cannot stat {}", path.display()),
                        source: e,
                    })?
                    .len();
                gguf::read_header(file, len)
            }
            ModelSource::Memory(m) => gguf::read_header(m.file(), m.len),
        };
        let header = header.map_err(|problem| match problem {
            gguf::GgufProblem::NotGguf(reason) => Error::NotGguf {
                path: shown.clone(),
                reason,
            },
            gguf::GgufProblem::Truncated(reason) => Error::TruncatedGguf {
                path: shown.clone(),
                reason,
            },
        })?;
        match header.architecture.as_deref() {
            None => Err(Error::NotGguf {
                path: shown,
                reason: "its metadata has no general.architecture".into(),
            }),
            Some(arch) if !gguf::SUPPORTED_ARCHITECTURES.contains(&arch) => {
                Err(Error::UnsupportedArchitecture {
                    path: shown,
                    architecture: arch.to_owned(),
                })
            }
            Some(_) => Ok(header),
        }
    }
}

fn open_model_file(path: &Path) -> Result<File> {
    match File::open(path) {
        Ok(f) => {
            let meta = f.metadata().map_err(|e| Error::Io {
                context: format!("cannot stat {}", path.display()),
                source: e,
            })?;
            if meta.is_dir() {
                return Err(Error::NotGguf {
                    path: path.to_path_buf(),
                    reason: "it is a directory".into(),
                });
            }
            Ok(f)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::ModelNotFound {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(Error::Io {
            context: format!("cannot open {}", path.display()),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_model_is_sealed_and_reachable_through_proc() {
        let bytes = crate::gguf::tests::build(&[("general.architecture", "llama")], 4);
        let m = InMemoryModel::from_bytes("t", &bytes).unwrap();
        assert_eq!(m.len(), bytes.len() as u64);
        // Reading it back through /proc/self/fd/N gives the same bytes (what llama.cpp will do).
        assert_eq!(std::fs::read(m.proc_path()).unwrap(), bytes);
        // Sealed: it cannot be written any more.
        let mut f = m.file();
        assert!(f.write_all(b"x").is_err());
        let header = ModelSource::Memory(m).check().unwrap();
        assert_eq!(header.architecture.as_deref(), Some("llama"));
    }

    #[test]
    fn a_writer_fills_by_position_from_several_threads_then_seals() {
        let bytes = crate::gguf::tests::build(&[("general.architecture", "llama")], 4000);
        let w = InMemoryModelWriter::new("w", bytes.len() as u64).unwrap();
        assert_eq!(w.len(), bytes.len() as u64);
        let pieces: Vec<(usize, &[u8])> = bytes.chunks(100).enumerate().map(|(i, c)| (i * 100, c)).collect();
        std::thread::scope(|s| {
            for half in [0, 1] {
                let (w, pieces) = (&w, &pieces);
                // Each thread writes every other piece, last to first.
                s.spawn(move || {
                    for (offset, piece) in pieces.iter().skip(half).step_by(2).rev() {
                        w.write_at(*offset as u64, piece).unwrap();
                    }
                });
            }
        });
        let end = bytes.len() as u64;
        assert!(w.write_at(end, b"x").is_err());
        assert!(w.write_at(end - 1, b"xy").is_err());
        assert!(w.write_at(u64::MAX, b"x").is_err());
        let m = w.finish().unwrap();
        assert_eq!(m.len(), end);
        assert_eq!(std::fs::read(m.proc_path()).unwrap(), bytes);
        let mut f = m.file();
        assert!(f.write_all(b"x").is_err());
        assert!(f.set_len(1).is_err());
    }

    #[test]
    fn check_reports_each_kind_of_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let check = |name: &str, bytes: Option<&[u8]>| {
            let p = dir.path().join(name);
            if let Some(b) = bytes {
                std::fs::write(&p, b).unwrap();
            }
            ModelSource::Path(p).check().unwrap_err()
        };
        assert!(matches!(check("missing.gguf", None), Error::ModelNotFound { .. }));
        assert!(matches!(
            check("text.gguf", Some(b"just some text, long enough")),
            Error::NotGguf { .. }
        ));
        let good = crate::gguf::tests::build(&[("general.architecture", "llama")], 64);
        assert!(matches!(
            check("cut.gguf", Some(&good[..good.len() - 10])),
            Error::TruncatedGguf { .. }
        ));
        let alien = crate::gguf::tests::build(&[("general.architecture", "fnord9000")], 4);
        let err = check("alien.gguf", Some(&alien));
        assert!(
            matches!(&err, Error::UnsupportedArchitecture { architecture, .. } if architecture == "fnord9000")
        );
        let no_arch = crate::gguf::tests::build(&[], 4);
        assert!(matches!(
            check("noarch.gguf", Some(&no_arch)),
            Error::NotGguf { .. }
        ));
        std::fs::create_dir(dir.path().join("adir")).unwrap();
        assert!(matches!(
            ModelSource::Path(dir.path().join("adir")).check(),
            Err(Error::NotGguf { .. })
        ));
    }
}
