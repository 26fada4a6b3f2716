//! A GGUF header reader: enough to tell "not a GGUF", "truncated" and "unsupported architecture"
//! apart with a clear message before llama.cpp sees the file (llama.cpp only says it failed).
//!
//! Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>. All integers little-endian:
//! magic `GGUF`, version u32, tensor count u64, metadata count u64, the metadata key/values, the
//! tensor infos (name, dims, type, offset), padding to `general.alignment`, then the tensor data.

use std::io::{BufReader, Read, Seek, SeekFrom};

/// What the header says, as far as the engine cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufHeader {
    pub version: u32,
    pub tensor_count: u64,
    pub metadata_count: u64,
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// Where the tensor data starts: everything before it is metadata (key/values, tensor infos,
    /// padding). llama.cpp reads only these bytes before it loads the weights.
    pub data_start: u64,
    /// Bytes the file must have to hold every tensor's data.
    pub required_len: u64,
    pub file_len: u64,
}

/// Why a file is not a usable GGUF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GgufProblem {
    /// Not a GGUF at all, or a malformed one.
    NotGguf(String),
    /// The file ends before its header or tensor data does.
    Truncated(String),
}

/// Limits against hostile headers (a header may not make us allocate or loop without bound).
const MAX_STRING: u64 = 16 << 20;
const MAX_DIMS: u32 = 4;

/// Block size (elements) and bytes per block of each ggml tensor type this llama.cpp knows, from
/// `ggml/src/ggml.c` `type_traits` of the vendored llama.cpp. Unknown types are left to llama.cpp.
fn type_block(ty: u32) -> Option<(u64, u64)> {
    Some(match ty {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        40 => (64, 36),   // NVFP4
        41 => (128, 18),  // Q1_0
        42 => (64, 18),   // Q2_0
        _ => return None,
    })
}

struct Reader<R> {
    inner: BufReader<R>,
    pos: u64,
    len: u64,
}

impl<R: Read + Seek> Reader<R> {
    fn need(&self, n: u64, what: &str) -> Result<(), GgufProblem> {
        if self.pos.checked_add(n).is_none_or(|end| end > self.len) {
            return Err(GgufProblem::Truncated(format!(
                "the file ends at byte {} while reading {what} (needs {n} more bytes at byte {})",
                self.len, self.pos
            )));
        }
        Ok(())
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufProblem> {
        self.need(N as u64, what)?;
        let mut b = [0u8; N];
        self.inner
            .read_exact(&mut b)
            .map_err(|e| GgufProblem::Truncated(format!("{what}: {e}")))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufProblem> {
        self.bytes::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufProblem> {
        self.bytes::<8>(what).map(u64::from_le_bytes)
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), GgufProblem> {
        self.need(n, what)?;
        let n_i64 = i64::try_from(n).map_err(|_| GgufProblem::NotGguf(format!("{what} is too long")))?;
        self.inner
            .seek_relative(n_i64)
            .map_err(|e| GgufProblem::Truncated(format!("{what}: {e}")))?;
        self.pos += n;
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String, GgufProblem> {
        let n = self.u64(what)?;
        if n > MAX_STRING {
            return Err(GgufProblem::NotGguf(format!(
                "{what} claims to be {n} bytes long"
            )));
        }
        self.need(n, what)?;
        let mut b = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut b)
            .map_err(|e| GgufProblem::Truncated(format!("{what}: {e}")))?;
        self.pos += n;
        String::from_utf8(b).map_err(|_| GgufProblem::NotGguf(format!("{what} is not UTF-8")))
    }

    fn skip_string(&mut self, what: &str) -> Result<(), GgufProblem> {
        let n = self.u64(what)?;
        self.skip(n, what)
    }

    /// Skips a metadata value of type `ty`.
    fn skip_value(&mut self, ty: u32, what: &str, depth: u32) -> Result<(), GgufProblem> {
        match ty {
            0 | 1 | 7 => self.skip(1, what),
            2 | 3 => self.skip(2, what),
            4..=6 => self.skip(4, what),
            10..=12 => self.skip(8, what),
            8 => self.skip_string(what),
            9 if depth == 0 => {
                let elem = self.u32(what)?;
                let n = self.u64(what)?;
                match elem {
                    0 | 1 | 7 => self.skip(n, what),
                    2 | 3 => self.skip(n.saturating_mul(2), what),
                    4..=6 => self.skip(n.saturating_mul(4), what),
                    10..=12 => self.skip(n.saturating_mul(8), what),
                    8 => {
                        // Each string needs at least its 8-byte length: bound the loop by the file.
                        self.need(n.saturating_mul(8), what)?;
                        (0..n).try_for_each(|_| self.skip_string(what))
                    }
                    other => Err(GgufProblem::NotGguf(format!(
                        "{what}: arrays of type {other} are not allowed"
                    ))),
                }
            }
            other => Err(GgufProblem::NotGguf(format!(
                "{what} has unknown value type {other}"
            ))),
        }
    }
}

/// Reads and checks the header of a GGUF file from its start.
pub fn read_header<R: Read + Seek>(file: R, file_len: u64) -> Result<GgufHeader, GgufProblem> {
    let mut r = Reader {
        inner: BufReader::with_capacity(64 << 10, file),
        pos: 0,
        len: file_len,
    };
    r.inner
        .seek(SeekFrom::Start(0))
        .map_err(|e| GgufProblem::NotGguf(format!("cannot seek: {e}")))?;
    if file_len < 4 {
        return Err(GgufProblem::NotGguf(format!(
            "the file is only {file_len} bytes long"
        )));
    }
    let magic = r.bytes::<4>("the magic")?;
    if &magic != b"GGUF" {
        return Err(GgufProblem::NotGguf(format!(
            "it does not start with the GGUF magic bytes (found {:?})",
            String::from_utf8_lossy(&magic)
        )));
    }
    let version = r.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufProblem::NotGguf(format!(
            "GGUF version {version} is not supported (supported: 2, 3)"
        )));
    }
    let tensor_count = r.u64("the tensor count")?;
    let metadata_count = r.u64("the metadata count")?;
    // Each entry takes at least 8 bytes: counts beyond the file size are lies (or truncation).
    for (count, what) in [(tensor_count, "tensor"), (metadata_count, "metadata")] {
        if count.saturating_mul(8) > file_len {
            return Err(GgufProblem::NotGguf(format!(
                "the header claims {count} {what} entries, more than the file can hold"
            )));
        }
    }

    let mut architecture = None;
    let mut name = None;
    let mut alignment = 32u64;
    for i in 0..metadata_count {
        let key = r.string(&format!("metadata key #{i}"))?;
        let ty = r.u32(&format!("the type of {key}"))?;
        match (key.as_str(), ty) {
            ("general.architecture", 8) => architecture = Some(r.string(&key)?),
            ("general.name", 8) => name = Some(r.string(&key)?),
            ("general.alignment", 4) => {
                alignment = u64::from(r.u32(&key)?);
                if alignment == 0 || !alignment.is_power_of_two() {
                    return Err(GgufProblem::NotGguf(format!(
                        "general.alignment {alignment} is not a power of two"
                    )));
                }
            }
            _ => r.skip_value(ty, &key, 0)?,
        }
    }

    let mut data_end = 0u64;
    for i in 0..tensor_count {
        let tname = r.string(&format!("the name of tensor #{i}"))?;
        let n_dims = r.u32(&format!("the dimensions of {tname}"))?;
        if n_dims > MAX_DIMS {
            return Err(GgufProblem::NotGguf(format!(
                "tensor {tname} has {n_dims} dimensions (at most {MAX_DIMS})"
            )));
        }
        let mut elements = 1u64;
        for _ in 0..n_dims {
            elements = elements.saturating_mul(r.u64(&format!("the shape of {tname}"))?);
        }
        let ty = r.u32(&format!("the type of {tname}"))?;
        let offset = r.u64(&format!("the offset of {tname}"))?;
        // For a known type, the tensor's exact byte size; otherwise at least its offset.
        let size = type_block(ty).map_or(0, |(block, bytes)| elements.div_ceil(block).saturating_mul(bytes));
        data_end = data_end.max(offset.saturating_add(size));
    }
    let data_start = r.pos.div_ceil(alignment).saturating_mul(alignment);
    let required_len = if tensor_count == 0 {
        r.pos
    } else {
        data_start.saturating_add(data_end)
    };
    if required_len > file_len {
        return Err(GgufProblem::Truncated(format!(
            "the header describes {required_len} bytes of model but the file has only {file_len}"
        )));
    }
    Ok(GgufHeader {
        version,
        tensor_count,
        metadata_count,
        architecture,
        name,
        data_start: if tensor_count == 0 { r.pos } else { data_start },
        required_len,
        file_len,
    })
}

/// Model architectures the vendored llama.cpp (llama-cpp-sys-2 0.1.160) can load: its
/// `LLM_ARCH_NAMES` in `src/llama-arch.cpp`, less `clip` (vision projectors, not language
/// models). Update with the llama-cpp-2 version.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "llama",
    "llama4",
    "deci",
    "falcon",
    "grok",
    "gpt2",
    "gptj",
    "gptneox",
    "mpt",
    "baichuan",
    "starcoder",
    "refact",
    "bert",
    "modern-bert",
    "nomic-bert",
    "nomic-bert-moe",
    "neo-bert",
    "jina-bert-v2",
    "jina-bert-v3",
    "eurobert",
    "bloom",
    "stablelm",
    "qwen",
    "qwen2",
    "qwen2moe",
    "qwen2vl",
    "qwen3",
    "qwen3moe",
    "qwen3next",
    "qwen3vl",
    "qwen3vlmoe",
    "qwen35",
    "qwen35moe",
    "clef",
    "qwen4exp",
    "phi2",
    "phi3",
    "phimoe",
    "plamo",
    "plamo2",
    "plamo3",
    "codeshell",
    "orion",
    "internlm2",
    "minicpm",
    "minicpm3",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3n",
    "gemma4",
    "gemma4-assistant",
    "gemma-embedding",
    "starcoder2",
    "mamba",
    "mamba2",
    "maple",
    "jamba",
    "falcon-h1",
    "xverse",
    "command-r",
    "cohere2",
    "cohere2moe",
    "dbrx",
    "olmo",
    "olmo2",
    "olmoe",
    "muse-glimmer",
    "openelm",
    "arctic",
    "deepseek",
    "deepseek2",
    "deepseek2-ocr",
    "deepseek32",
    "deepseek4",
    "chatglm",
    "glm4",
    "glm4moe",
    "glm-dsa",
    "bitnet",
    "t5",
    "t5encoder",
    "jais",
    "jais2",
    "nemotron",
    "nemotron_h",
    "nemotron_h_moe",
    "exaone",
    "exaone4",
    "exaone-moe",
    "rwkv6",
    "rwkv6qwen2",
    "rwkv7",
    "arwkv7",
    "granite",
    "granitemoe",
    "granitehybrid",
    "graniteswitch",
    "granite_swa",
    "chameleon",
    "wavtokenizer-dec",
    "plm",
    "bailingmoe",
    "bailingmoe2",
    "bailingmoe3",
    "dots1",
    "dots3note",
    "arcee",
    "afmoe",
    "laguna",
    "ernie4_5",
    "ernie4_5-moe",
    "hunyuan-moe",
    "hunyuan-dense",
    "hunyuan_vl",
    "hy_v3",
    "hy_v4",
    "smollm3",
    "gpt-oss",
    "lfm2",
    "lfm2moe",
    "dream",
    "smallthinker",
    "llada",
    "llada-moe",
    "seed_oss",
    "grovemoe",
    "apertus",
    "minimax-01",
    "hrm_text",
    "minimax-m2",
    "minimax-m3",
    "cogvlm",
    "rnd1",
    "pangu-embedded",
    "mistral3",
    "eagle3",
    "dflash",
    "mistral4",
    "paddleocr",
    "mimo2",
    "step35",
    "spark2_5",
    "llama-embed",
    "maincoder",
    "kimi-linear",
    "kimi-k3",
    "glm5-next",
    "talkie",
    "mellum",
    "nanbeige",
    "qwen3tts",
    "pockettts",
];

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Cursor;

    /// Builds a small GGUF: the given string metadata and one F32 tensor of `elements` elements
    /// whose data is present in full.
    pub(crate) fn build(meta: &[(&str, &str)], elements: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&(meta.len() as u64 + 1).to_le_bytes());
        let string = |b: &mut Vec<u8>, s: &str| {
            b.extend_from_slice(&(s.len() as u64).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        };
        for (k, v) in meta {
            string(&mut b, k);
            b.extend_from_slice(&8u32.to_le_bytes());
            string(&mut b, v);
        }
        // An array of u32, to exercise skipping.
        string(&mut b, "test.array");
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&3u64.to_le_bytes());
        b.extend_from_slice(&[0u8; 12]);
        // One tensor.
        string(&mut b, "weight");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&elements.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend(std::iter::repeat_n(0u8, elements as usize * 4));
        b
    }

    fn read(b: &[u8]) -> Result<GgufHeader, GgufProblem> {
        read_header(Cursor::new(b), b.len() as u64)
    }

    #[test]
    fn reads_a_well_formed_header() {
        let b = build(&[("general.architecture", "llama"), ("general.name", "tiny")], 8);
        let h = read(&b).unwrap();
        assert_eq!(h.architecture.as_deref(), Some("llama"));
        assert_eq!(h.name.as_deref(), Some("tiny"));
        assert_eq!(h.tensor_count, 1);
        assert_eq!(h.required_len, b.len() as u64);
    }

    #[test]
    fn every_truncation_is_reported_as_truncated_not_a_panic() {
        let b = build(&[("general.architecture", "llama")], 8);
        for cut in 8..b.len() {
            match read(&b[..cut]) {
                Err(GgufProblem::Truncated(_)) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_wrong_magic_version_and_absurd_counts() {
        assert!(matches!(read(b"PK\x03\x04...."), Err(GgufProblem::NotGguf(m)) if m.contains("magic")));
        assert!(matches!(read(b"GG"), Err(GgufProblem::NotGguf(_))));
        let mut b = build(&[], 1);
        b[4] = 1;
        assert!(matches!(read(&b), Err(GgufProblem::NotGguf(m)) if m.contains("version 1")));
        let mut b = build(&[], 1);
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(read(&b), Err(GgufProblem::NotGguf(m)) if m.contains("more than the file")));
    }

    /// Flipping any single header byte gives an error or a different (still bounded) header:
    /// never a panic, a hang or a huge allocation.
    #[test]
    fn tampered_headers_never_panic() {
        let b = build(&[("general.architecture", "llama")], 4);
        for i in 0..b.len() - 16 {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut t = b.clone();
                t[i] ^= flip;
                let _ = read(&t);
            }
        }
    }

    #[test]
    fn supported_architectures_include_the_catalogue_models() {
        assert!(SUPPORTED_ARCHITECTURES.contains(&"llama"));
        assert!(!SUPPORTED_ARCHITECTURES.contains(&"clip"));
    }
}
